//! A real HTTP/WebSocket server on loopback playing an API worker, for tests of what sits
//! in front of the API (the gateway) without depending on the API's own behaviour:
//!
//! - `GET /api/health` → 200 `{"status":"ok","worker":N,"db":"ok"}`
//! - `/api/echo` (any method) → 200 JSON of what arrived: method, path, query, headers,
//!   body length and [`digest`] — so a test sees the request exactly as the upstream did
//! - `/socket.io/…` with a WebSocket upgrade → echoes every text/binary message
//! - `/socket.io/…` without upgrade → 200 `{"worker":N,"transport":"polling"}`

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running fake worker; on drop it stops listening and drops every connection.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Listen on `addr` (normally the config's `api.listen` + worker) as worker `worker`,
    /// or say why it could not.
    pub async fn try_start(addr: SocketAddr, worker: u16) -> Result<Upstream, String> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("fake upstream bind {addr}: {e}"))?;
        let task = tokio::spawn(async move {
            // Connections live in this set so that stopping the server (dropping this
            // task) also kills its open connections, like a worker process dying.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                while connections.try_join_next().is_some() {}
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(req, worker));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(Upstream { addr, task })
    }
}

fn json(status: u16, value: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn handle(
    mut req: Request<Incoming>,
    worker: u16,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/api/health" {
        return Ok(json(
            200,
            serde_json::json!({"status": "ok", "worker": worker, "db": "ok"}),
        ));
    }
    if path.starts_with("/socket.io") {
        if fastwebsockets::upgrade::is_upgrade_request(&req) {
            let Ok((resp, fut)) = fastwebsockets::upgrade::upgrade(&mut req) else {
                return Ok(json(400, serde_json::json!({"error": "bad upgrade"})));
            };
            tokio::spawn(async move {
                let Ok(mut ws) = fut.await else { return };
                ws.set_auto_close(true);
                ws.set_auto_pong(true);
                while let Ok(frame) = ws.read_frame().await {
                    match frame.opcode {
                        OpCode::Text | OpCode::Binary => {
                            let echo = Frame::new(true, frame.opcode, None, frame.payload);
                            if ws.write_frame(echo).await.is_err() {
                                break;
                            }
                        }
                        OpCode::Close => break,
                        _ => {}
                    }
                }
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, Full::new(Bytes::new())));
        }
        return Ok(json(
            200,
            serde_json::json!({"worker": worker, "transport": "polling", "query": req.uri().query()}),
        ));
    }
    if path == "/api/echo" {
        let method = req.method().to_string();
        let query = req.uri().query().map(str::to_string);
        let mut headers = BTreeMap::new();
        for (name, value) in req.headers() {
            headers.insert(
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            );
        }
        let body = match req.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => Bytes::new(),
        };
        return Ok(json(
            200,
            serde_json::json!({
                "worker": worker,
                "method": method,
                "path": path,
                "query": query,
                "headers": headers,
                "body_bytes": body.len(),
                "body_digest": digest(&body),
            }),
        ));
    }
    Ok(json(
        404,
        serde_json::json!({"error": {"code": "not_found", "message": path}}),
    ))
}

/// FNV-1a (64 bits) of `bytes`, in hex: enough to tell a body arrived unchanged.
pub fn digest(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}
