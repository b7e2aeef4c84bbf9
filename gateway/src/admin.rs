//! The admin listener (`gateway.admin_listen`, loopback): `/metrics`, `/healthz` (the
//! process is up) and `/readyz` (at least one healthy API worker).

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::respond;
use crate::route::{classify, Listener, Route};
use crate::upstream::Pool;

/// The admin listener's application.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub pool: Arc<Pool>,
}

impl Admin {
    fn reply(&self, path: &str) -> (u16, &'static str, Vec<u8>) {
        match classify(Listener::Admin, path) {
            Route::Metrics => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            Route::Healthz => (200, "text/plain; charset=utf-8", b"ok\n".to_vec()),
            Route::Readyz => {
                let healthy = self.pool.healthy_count();
                if healthy > 0 {
                    (
                        200,
                        "text/plain; charset=utf-8",
                        format!("ready: {healthy} healthy api worker(s)\n").into_bytes(),
                    )
                } else {
                    (
                        503,
                        "text/plain; charset=utf-8",
                        b"not ready: no healthy api worker\n".to_vec(),
                    )
                }
            }
            _ => (
                404,
                "application/json",
                respond::error_body("not_found", "admin serves /metrics, /healthz and /readyz")
                    .to_vec(),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let (status, content_type, body) = self.reply(&path);
        let mut builder = Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", body.len())
            .header("cache-control", "no-store");
        for (name, value) in respond::SECURITY {
            builder = builder.header(name, value);
        }
        builder
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
