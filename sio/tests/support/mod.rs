//! Raw protocol clients for the conformance suite: one HTTP/1.1 request per TCP
//! connection (hyper client, no Engine.IO knowledge) and a WebSocket client
//! (fastwebsockets), plus the choice of server under test.
//!
//! Target: `SIO_CONFORMANCE_URL=http://host:port` points the suite at any server that
//! runs the standard harness (the `echo` example, or it behind the gateway) with a
//! 300 ms / 200 ms heartbeat; without it an in-process harness is started on an
//! ephemeral loopback port. Engine.IO echo tests need `/engine.io/` and are skipped when
//! the target does not serve it.

#![allow(dead_code)]

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use http_body_util::{BodyExt, Full};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub const PING_INTERVAL: Duration = Duration::from_millis(300);
pub const PING_TIMEOUT: Duration = Duration::from_millis(200);
/// How long any single expected message may take on a loaded CI machine.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// `host:port` of the server under test.
pub fn target() -> &'static str {
    static TARGET: OnceLock<String> = OnceLock::new();
    TARGET.get_or_init(|| match std::env::var("SIO_CONFORMANCE_URL") {
        Ok(url) => url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        Err(_) => start_harness(),
    })
}

/// Runs the harness on its own thread and runtime so it outlives every test's runtime.
fn start_harness() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let addr = listener.local_addr().expect("local addr");
            let config = btp_sio::harness::config();
            let sio = btp_sio::harness::socketio(config.clone());
            let eio = btp_sio::harness::engine(config);
            tx.send(addr.to_string()).expect("report address");
            let upgrades = btp_sio::harness::Upgrades::default();
            btp_sio::harness::serve(listener, sio, eio, upgrades, std::future::pending()).await;
        });
    });
    rx.recv().expect("harness address")
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// One request on a fresh connection.
pub async fn request(
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    request_to(target(), method, path_and_query, body, headers).await
}

/// One request on a fresh connection to `addr`.
pub async fn request_to(
    addr: &str,
    method: &str,
    path_and_query: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(http::header::HOST, addr);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8");
    }
    let req = builder
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .map_err(|_| "request timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

pub async fn get(path_and_query: &str) -> HttpResponse {
    request("GET", path_and_query, None, &[])
        .await
        .expect("GET")
}

pub async fn post(path_and_query: &str, body: &[u8]) -> HttpResponse {
    request("POST", path_and_query, Some(body), &[])
        .await
        .expect("POST")
}

/// Serves `server` on an ephemeral loopback port through hyper (HTTP/1.1 with
/// upgrades); its address.
pub async fn serve<D: Send + Sync + 'static>(server: btp_sio::Server<D>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr").to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Opens a long-polling session on `addr` under `base`; its poll URL.
pub async fn polling_url(addr: &str, base: &str) -> String {
    let open = request_to(
        addr,
        "GET",
        &format!("{base}?EIO=4&transport=polling"),
        None,
        &[],
    )
    .await
    .expect("polling handshake");
    format!(
        "{base}?EIO=4&transport=polling&sid={}",
        open_sid(open.text())
    )
}

/// Opens a long-polling session and returns its sid.
pub async fn polling_session(base: &str) -> String {
    let response = get(&format!("{base}?EIO=4&transport=polling")).await;
    assert_eq!(response.status, 200, "{}", response.text());
    open_sid(response.text())
}

pub fn open_sid(open_packet: &str) -> String {
    assert!(
        open_packet.starts_with('0'),
        "not an open packet: {open_packet}"
    );
    let value: serde_json::Value =
        serde_json::from_str(&open_packet[1..]).expect("open packet json");
    value["sid"].as_str().expect("sid").to_owned()
}

struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Closed,
}

impl Msg {
    pub fn text(&self) -> &str {
        match self {
            Msg::Text(t) => t,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

pub struct Ws {
    ws: FragmentCollector<TokioIo<Upgraded>>,
}

/// Opens a WebSocket; `Err(status)` when the server refused the upgrade.
pub async fn ws_connect(path_and_query: &str) -> Result<Ws, String> {
    ws_connect_to(target(), path_and_query).await
}

/// Opens a WebSocket to `addr`.
pub async fn ws_connect_to(addr: &str, path_and_query: &str) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let req = http::Request::builder()
        .method("GET")
        .uri(path_and_query)
        .header(http::header::HOST, addr)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "upgrade")
        .header(
            "Sec-WebSocket-Key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("Sec-WebSocket-Version", "13")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let (ws, _) = fastwebsockets::handshake::client(&SpawnExecutor, req, stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Ws {
        ws: FragmentCollector::new(ws),
    })
}

impl Ws {
    /// Opens an Engine.IO WebSocket session and returns it with its open packet.
    pub async fn open(base: &str) -> (Ws, String) {
        Ws::open_at(target(), base).await
    }

    /// Opens an Engine.IO WebSocket session on `addr`.
    pub async fn open_at(addr: &str, base: &str) -> (Ws, String) {
        let mut ws = ws_connect_to(addr, &format!("{base}?EIO=4&transport=websocket"))
            .await
            .expect("websocket connect");
        let open = ws.recv().await;
        (ws, open.text().to_owned())
    }

    /// Next message, or `Closed`. Panics after [`PATIENCE`].
    pub async fn recv(&mut self) -> Msg {
        self.recv_within(PATIENCE)
            .await
            .expect("no message within the deadline")
    }

    /// Next message within `limit`, `None` on timeout.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Msg> {
        let frame = tokio::time::timeout(limit, self.ws.read_frame())
            .await
            .ok()?;
        Some(match frame {
            Err(_) => Msg::Closed,
            Ok(frame) => match frame.opcode {
                OpCode::Text => {
                    Msg::Text(String::from_utf8(frame.payload.to_vec()).expect("utf-8 text frame"))
                }
                OpCode::Binary => Msg::Binary(frame.payload.to_vec()),
                _ => Msg::Closed,
            },
        })
    }

    /// Next message that is not a ping; pings are answered with pongs.
    pub async fn recv_data(&mut self) -> Msg {
        loop {
            let msg = self.recv().await;
            if msg == Msg::Text("2".into()) {
                self.send("3").await;
                continue;
            }
            return msg;
        }
    }

    /// Waits for the server to close the connection, answering pings meanwhile.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_within(left).await {
                None => return false,
                Some(Msg::Closed) => return true,
                Some(Msg::Text(t)) if t == "2" => self.send("3").await,
                Some(_) => {}
            }
        }
    }

    pub async fn send(&mut self, text: &str) {
        let _ = self
            .ws
            .write_frame(Frame::text(Payload::Owned(text.as_bytes().to_vec())))
            .await;
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        let _ = self
            .ws
            .write_frame(Frame::binary(Payload::Owned(bytes.to_vec())))
            .await;
    }
}

/// A WebSocket session connected to Socket.IO namespace `/`, past its `auth` event.
pub async fn sio_socket(base: &str) -> Ws {
    let (mut ws, _) = Ws::open(base).await;
    ws.send("40").await;
    let connect = ws.recv_data().await;
    assert!(connect.text().starts_with("40{"), "{connect:?}");
    let auth = ws.recv_data().await;
    assert_eq!(auth.text(), r#"42["auth",{}]"#);
    ws
}
