//! The realtime glue between the sync engine and the Socket.IO server (`btp-sio`):
//! who may connect (a bearer token in the handshake `auth`), what the events do
//! (`sync:pull` and `sync:push` answer through their acks with exactly the HTTP API's
//! JSON), and the fan-out of committed batches from the change bus as `sync:changes`.
//!
//! The no-echo rule lives in one place, [`fan_out`]: a batch goes to the sockets in its
//! user's room except those of the session that sent it, and a batch without an origin
//! session is not broadcast at all. Every batch comes from the bus, whichever transport
//! or process committed it, so a push over REST, over a socket on this process or over
//! a socket on another process reaches the other devices the same way.
//!
//! A socket is as good as the token it was opened with, for as long as the token lives:
//! `revoke` closes it when the token is revoked (logout, logout-all, from the bus, on
//! whichever worker) or expires, and every `sync:*` call names the token to the store,
//! which refuses a dead one in the same statement that reads or writes.
//!
//! Rooms: `namespace` (auth and events), `revoke` (revocation and expiry),
//! `collector` (the Socket.IO server's counters as Prometheus metrics).

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use btp_sio::{Args, Cors, Server};
use prometheus::{Histogram, HistogramOpts, IntGauge};
use tokio::sync::broadcast::error::RecvError;

use crate::bus::ChangeBatch;
use crate::error::ApiError;
use crate::metrics::MetricsError;
use crate::state::AppState;
use crate::store::Caller;

/// The Socket.IO request path; the gateway routes it here unchanged.
pub const PATH: &str = "/socket.io/";
/// The namespace the product uses.
const NSP: &str = "/";

mod collector;
mod namespace;
mod revoke;

/// Who a socket is, decided once at its handshake.
pub struct Peer {
    /// The user and the hash of the token the socket was opened with.
    pub caller: Caller,
    /// When that token expires (ms since the epoch): the socket is closed then.
    pub expires_at: i64,
    /// The device's `clientSessionId` (stable per device); a client that sends none gets
    /// a fresh one, so its pushes still have an origin that is never echoed to.
    pub client_session_id: String,
}

/// The running realtime layer of one API process.
#[derive(Clone)]
pub struct Realtime {
    server: Server<Peer>,
}

impl Realtime {
    /// Build the Socket.IO server from `[realtime]` and start the bus fan-out task.
    pub fn start(state: &AppState) -> Result<Realtime, MetricsError> {
        let rt = &state.config.realtime;
        let config = btp_sio::Config {
            ping_interval: rt.ping_interval(),
            ping_timeout: rt.ping_timeout(),
            max_payload: rt.max_payload_bytes,
            connect_timeout: rt.connect_timeout(),
            max_buffered_bytes: rt.max_buffered_bytes(),
            max_inflight_events: usize::try_from(rt.max_inflight_events).unwrap_or(usize::MAX),
            cors: Cors::Origins(state.config.allowed_origins()),
            sid_prefix: format!("{:02x}", state.worker),
            path: PATH.to_owned(),
            ..btp_sio::Config::default()
        };
        let revoked = revoke::Revoker::new(state)?;
        let server = Server::builder(config)
            .namespace(NSP, namespace::namespace(state.clone(), revoked.clone()))
            .build();
        let fan_out_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "broadcast_fanout_seconds",
                "Time to queue one committed batch to the user's other sockets",
            )
            .buckets(vec![
                0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1,
            ]),
        )?;
        let lagged = IntGauge::new(
            "broadcast_lagged_batches",
            "Batches the fan-out skipped because it fell behind the bus (clients pull to recover)",
        )?;
        let registry = state.metrics.registry();
        registry.register(Box::new(fan_out_seconds.clone()))?;
        registry.register(Box::new(lagged.clone()))?;
        registry.register(Box::new(collector::SocketCollector::new(server.clone())?))?;
        tokio::spawn(fan_out(
            state.clone(),
            server.clone(),
            fan_out_seconds,
            lagged,
        ));
        revoked.start(state, &server);
        Ok(Realtime { server })
    }

    /// Route `/socket.io/` to the Socket.IO server.
    pub fn mount(&self, router: Router) -> Router {
        let server = self.server.clone();
        router.route_service(
            PATH,
            tower::service_fn(move |req: Request| {
                let server = server.clone();
                async move {
                    let response: Response =
                        server.handle(req).await.map(Body::new).into_response();
                    Ok::<_, std::convert::Infallible>(response)
                }
            }),
        )
    }

    /// Whether a request path is the Socket.IO server's.
    pub fn handles_path(&self, path: &str) -> bool {
        self.server.handles_path(path)
    }

    /// Serve a WebSocket request read from `stream` (see [`btp_sio::sniff`]) on a task
    /// of its own.
    pub fn take_websocket(&self, request: Request<()>, stream: tokio::net::TcpStream) {
        let server = self.server.clone();
        tokio::spawn(async move { server.handle_websocket(request, stream).await });
    }

    /// Serve a WebSocket connection the gateway handed over (`btp_handoff`) on a task of
    /// its own, as [`Realtime::take_websocket`] serves one read here; the gateway's
    /// response headers go on the answer. The head is read within the limits the gateway
    /// read it with (`btp_h1::limits`), so whatever it hands over gets a status line: the
    /// `101`, or — for what is not a WebSocket upgrade on this server's path — a JSON
    /// 400, and the connection closed.
    pub fn take_handoff(&self, handoff: btp_handoff::Handoff) {
        let btp_handoff::Handoff {
            stream,
            head,
            response_headers,
        } = handoff;
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpStream::from_std(stream))
        {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "[REALTIME] HANDOFF socket unusable");
                return;
            }
        };
        let headers = header_lines(&response_headers);
        let upgrade =
            btp_sio::sniff::websocket_upgrade(&head, btp_h1::limits::MAX_FORWARDED_HEADERS).filter(
                |(request, len)| *len == head.len() && self.handles_path(request.uri().path()),
            );
        let server = self.server.clone();
        tokio::spawn(async move {
            match (upgrade, headers) {
                (Some((request, _)), Some(headers)) => {
                    server.handle_websocket_with(request, stream, headers).await
                }
                (_, headers) => {
                    tracing::warn!("[REALTIME] HANDOFF refused: not a WebSocket upgrade on {PATH}");
                    refuse_handoff(stream, headers.unwrap_or_default()).await;
                }
            }
        });
    }

    /// Close every session in order (Engine.IO `close`), so clients reconnect at once
    /// (to another worker, or to this one once it is back).
    pub async fn shutdown(&self) {
        self.server.shutdown().await;
    }
}

/// Answer a handed-over connection that is not an upgrade this server takes: a JSON 400
/// with the gateway's headers, then close.
async fn refuse_handoff(mut stream: tokio::net::TcpStream, headers: http::HeaderMap) {
    use tokio::io::AsyncWriteExt;
    let body = ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "bad_request",
        "not a WebSocket upgrade",
    )
    .to_json()
    .to_string();
    let mut head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in &headers {
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    head.push_str(&body);
    let written = async {
        stream.write_all(head.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), written).await;
}

/// A header section (`Name: value\r\n` lines and the empty line) as a map (pure).
fn header_lines(block: &[u8]) -> Option<http::HeaderMap> {
    let mut parsed = [httparse::EMPTY_HEADER; 32];
    let httparse::Status::Complete((_, headers)) =
        httparse::parse_headers(block, &mut parsed).ok()?
    else {
        return None;
    };
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for h in headers {
        map.append(
            http::HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            http::HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    Some(map)
}

/// The room of a user's sockets: where their changes are broadcast and their tokens'
/// revocations are looked for.
fn room(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// Broadcast every committed batch to its user's other sessions.
async fn fan_out(state: AppState, server: Server<Peer>, seconds: Histogram, lagged: IntGauge) {
    let mut batches = state.bus.subscribe();
    loop {
        match batches.recv().await {
            Ok(batch) => {
                let started = Instant::now();
                broadcast(&server, &batch);
                seconds.observe(started.elapsed().as_secs_f64());
            }
            Err(RecvError::Lagged(n)) => {
                // Skipped batches are not lost: each device sees `from` ≠ its cursor on
                // the next batch and pulls.
                lagged.add(n as i64);
                tracing::warn!(skipped = n, "[SYNC] BROADCAST_LAGGED");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn broadcast(server: &Server<Peer>, batch: &ChangeBatch) -> usize {
    let Some(origin) = batch.origin_session.as_deref() else {
        return 0;
    };
    let Ok(args) = Args::one(&batch.payload()) else {
        return 0;
    };
    let sent = server.broadcast(
        NSP,
        Some(&room(&batch.user_id)),
        "sync:changes",
        &args,
        |s| s.data().client_session_id == origin,
    );
    tracing::debug!(user = %batch.user_id, origin, from = batch.from, to = batch.to, sent, "[SYNC] BROADCAST");
    sent
}

#[cfg(test)]
mod tests {
    use super::header_lines;

    #[test]
    fn the_gateways_header_section_becomes_a_map_and_anything_else_is_refused() {
        let map = header_lines(b"X-Request-Id: r-1\r\nX-Content-Type-Options: nosniff\r\n\r\n")
            .expect("a header section");
        assert_eq!(map.len(), 2);
        assert_eq!(map["x-request-id"], "r-1");
        assert_eq!(map["x-content-type-options"], "nosniff");
        assert_eq!(header_lines(b"\r\n").map(|m| m.len()), Some(0));
        // Not ended by the empty line, not a header, a value with a control character.
        assert!(header_lines(b"X-Request-Id: r-1\r\n").is_none());
        assert!(header_lines(b"no colon here\r\n\r\n").is_none());
        assert!(header_lines(b"X-A: a\x01b\r\n\r\n").is_none());
    }
}
