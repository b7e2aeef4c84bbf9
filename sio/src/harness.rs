//! The standard protocol test-suite harness, as a library so the `echo` example and the
//! conformance tests serve exactly the same thing: a Socket.IO server on `/socket.io/`
//! whose namespaces `/` and `/custom` emit `auth` (the handshake payload) on connection,
//! answer `message` with `message-back`, acknowledge `message-with-ack` with its
//! arguments and bounce `emit-with-ack` back through a server-side ack; and a bare
//! Engine.IO server on `/engine.io/` that echoes every message.
//!
//! Built only on the crate's public API.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::sniff::{sniff, Sniffed};
use crate::{
    Args, CloseReason, Config, Connection, Cors, EngineHandler, EngineServer, Message, Namespace,
    ReadGate, Server,
};

/// The harness settings: ping 300 ms, timeout 200 ms, connect timeout 1 s, max payload
/// 1,000,000 bytes, CORS `*`.
pub fn config() -> Config {
    Config {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        connect_timeout: Duration::from_millis(1000),
        cors: Cors::Any,
        ..Config::default()
    }
}

fn echo_namespace() -> Namespace<Value> {
    Namespace::new(|handshake| async move { Ok(handshake.auth) })
        .on_connection(|socket| {
            if let Ok(args) = Args::one(socket.data()) {
                let _ = socket.emit("auth", &args);
            }
        })
        // These two answer in the closure, which runs in the order messages arrive,
        // not in the returned future, which is spawned: replies keep the order of the
        // messages, as with the reference server.
        .on("message", |socket, event| {
            let _ = socket.emit("message-back", &event.args);
            std::future::ready(())
        })
        .on("message-with-ack", |_socket, event| {
            if let Some(ack) = event.ack {
                let _ = ack.send(&event.args);
            }
            std::future::ready(())
        })
        .on("emit-with-ack", |socket, event| async move {
            let Ok(reply) = socket.emit_with_ack("emit-with-ack", &event.args) else {
                return;
            };
            if let Ok(Ok(args)) = tokio::time::timeout(Duration::from_secs(10), reply).await {
                let _ = socket.emit("emit-with-ack", &args);
            }
        })
}

/// The Socket.IO side of the harness (path from `config`).
pub fn socketio(config: Config) -> Server<Value> {
    Server::builder(config)
        .namespace("/", echo_namespace())
        .namespace("/custom", echo_namespace())
        .build()
}

/// Engine.IO handler that sends every message back.
pub struct Echo;

impl EngineHandler for Echo {
    type State = ();

    fn new_state(&self) {}

    fn on_message(
        &self,
        conn: &Arc<Connection<Self>>,
        message: Message,
    ) -> Result<Option<ReadGate>, CloseReason> {
        conn.send(message);
        Ok(None)
    }
}

/// The bare Engine.IO side of the harness, on `/engine.io/`.
pub fn engine(config: Config) -> EngineServer<Echo> {
    EngineServer::new(
        Config {
            path: "/engine.io/".to_owned(),
            ..config
        },
        Echo,
    )
}

/// Answered 200 so the harness can stand behind the btp gateway, whose health checks
/// probe API workers on this path.
pub const HEALTH_PATH: &str = "/api/health";

fn health() -> http::Response<crate::engine::Body> {
    let mut response = http::Response::new(crate::engine::http::full(&b"{\"status\":\"ok\"}"[..]));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// How the harness takes WebSocket requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Upgrades {
    /// A connection that opens with a WebSocket request goes straight to the server
    /// ([`crate::sniff`]), as in the btp API; later ones on a connection go through hyper.
    #[default]
    Direct,
    /// Every request goes through hyper, WebSocket requests included.
    Hyper,
}

/// Serves both servers on `listener` (HTTP/1.1 with upgrades) until `shutdown`
/// resolves, then shuts both down gracefully.
pub async fn serve(
    listener: TcpListener,
    sio: Server<Value>,
    eio: EngineServer<Echo>,
    upgrades: Upgrades,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let sio = sio.clone();
        let eio = eio.clone();
        tokio::spawn(async move {
            let stream = match upgrades {
                Upgrades::Hyper => stream,
                Upgrades::Direct => {
                    let ours = |path: &str| sio.handles_path(path) || eio.handles_path(path);
                    match sniff(stream, peer, ours).await {
                        Sniffed::Http(stream, _) => stream,
                        Sniffed::WebSocket(stream, req) if sio.handles_path(req.uri().path()) => {
                            return sio.handle_websocket(req, stream).await;
                        }
                        Sniffed::WebSocket(stream, req) => {
                            return eio.handle_websocket(req, stream).await;
                        }
                        Sniffed::Gone => return,
                    }
                }
            };
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let sio = sio.clone();
                let eio = eio.clone();
                async move {
                    let path = req.uri().path();
                    let response = if sio.handles_path(path) {
                        sio.handle(req).await
                    } else if path == HEALTH_PATH {
                        health()
                    } else {
                        eio.handle(req).await
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
    sio.shutdown().await;
    eio.shutdown().await;
}
