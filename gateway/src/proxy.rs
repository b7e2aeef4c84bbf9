//! The request path on the public port, as Pingora phases: each method is the moment it
//! runs in.
//!
//! - `early_request_filter`: the headers are in; stop the header deadline.
//! - `request_filter`: decode the path, classify it, answer what the gateway answers
//!   itself (static files, `/config.json`, redirects, 400/405/413), set the timeouts of
//!   what goes upstream (upgraded tunnels get `tunnel_idle_timeout` on the client side).
//! - `upstream_peer`: pick the API worker (sid-sticky or round robin) with its timeouts;
//!   no healthy worker is an immediate 503.
//! - `upstream_request_filter`: forwarding headers and the request id.
//! - `request_body_filter`: count streamed body bytes against `max_body_bytes`.
//! - `response_filter`: security headers, tunnel accounting.
//! - `fail_to_connect` / `fail_to_proxy`: passive health and the JSON error shape.
//! - `logging`: one access-log line and the metrics.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::http::RequestHeader;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::access::Finished;
use crate::assets;
use crate::forward;
use crate::listener;
use crate::metrics::Metrics;
use crate::path;
use crate::reload::{Live, Snapshot};
use crate::respond::{self, Reply};
use crate::route::{classify, Listener, Route};
use crate::upstream::{sticky_worker, Pool};

/// The gateway's proxy logic; one instance serves every public listener.
pub struct Gateway {
    /// Settings and static files, swapped whole by a reload; each request reads the
    /// snapshot it started with.
    pub live: Live,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
}

/// Per-request state shared across phases.
pub struct Ctx {
    snap: Arc<Snapshot>,
    start: Instant,
    route: Route,
    request_id: String,
    tls: bool,
    worker: Option<usize>,
    /// Status of a response the gateway wrote itself.
    status: Option<u16>,
    upgrade: bool,
    tunnel_open: bool,
    body_bytes: u64,
    encoding: Option<assets::Encoding>,
}

fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
}

impl Gateway {
    async fn write(&self, session: &mut Session, ctx: &mut Ctx, reply: Reply) -> Result<bool> {
        let mut header = reply.header;
        header.insert_header("x-request-id", ctx.request_id.as_str())?;
        ctx.status = Some(header.status.as_u16());
        let head_only = session.req_header().method == Method::HEAD || reply.body.is_empty();
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(reply.body), true).await?;
        }
        Ok(true)
    }

    async fn error(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        code: &str,
        message: &str,
    ) -> Result<bool> {
        let reply = respond::error(status, code, message, ctx.tls)?;
        self.write(session, ctx, reply).await
    }

    fn serve_static(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        clean: &path::CleanPath,
    ) -> Result<Reply> {
        let req = session.req_header();
        let answer = ctx.snap.store.serve(assets::Request {
            method: &req.method,
            tls: ctx.tls,
            path: clean,
            accept: header_str(session, "accept"),
            accept_encoding: header_str(session, "accept-encoding"),
            if_none_match: header_str(session, "if-none-match"),
        })?;
        ctx.encoding = answer.encoding;
        Ok(answer.reply)
    }

    fn client_config(&self, ctx: &Ctx) -> Result<Reply> {
        let body = ctx.snap.settings.client_config.clone();
        let mut header = respond::header(200, ctx.tls)?;
        header.insert_header("content-type", "application/json")?;
        header.insert_header("cache-control", "no-cache")?;
        header.insert_header("content-length", body.len().to_string())?;
        Ok(Reply { header, body })
    }

    fn redirect(&self, session: &Session, ctx: &Ctx) -> Result<Option<Reply>> {
        let req = session.req_header();
        let host = header_str(session, "host")
            .map(str::to_string)
            .or_else(|| req.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let Some(location) = ctx.snap.settings.https_location(&host, target) else {
            return Ok(None);
        };
        let mut header = respond::header(308, ctx.tls)?;
        header.insert_header("location", location)?;
        header.insert_header("content-length", "0")?;
        Ok(Some(Reply {
            header,
            body: Bytes::new(),
        }))
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            snap: self.live.load_full(),
            start: Instant::now(),
            route: Route::Static,
            request_id: String::new(),
            tls: false,
            worker: None,
            status: None,
            upgrade: false,
            tunnel_open: false,
            body_bytes: 0,
            encoding: None,
        }
    }

    /// A request Pingora could not parse gets the gateway's own 400, security headers and
    /// JSON shape included (a patched hook, see patches/README.md).
    fn invalid_request_response(
        &self,
        session: &pingora::protocols::http::ServerSession,
    ) -> Option<(pingora::http::ResponseHeader, Bytes)> {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let reply = respond::error(400, "bad_request", "malformed request", tls).ok()?;
        Some((reply.header, reply.body))
    }

    /// No downstream modules: Pingora's default is a (disabled) compression module that
    /// would still run on every response, and static variants are precompressed anyway.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        listener::disarm(session.stream());
        ctx.start = Instant::now();
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let trusted = peer_ip(session).is_some_and(|ip| ctx.snap.settings.is_trusted(ip));
        ctx.request_id = forward::request_id(header_str(session, "x-request-id"), trusted);

        // Pingora would refuse CONNECT with its own bare 405; it lets it through to here
        // (`allow_connect_method_proxying`) so that the refusal has the usual shape.
        if session.req_header().method == Method::CONNECT {
            session.set_keepalive(None);
            return self
                .error(
                    session,
                    ctx,
                    405,
                    "method_not_allowed",
                    "CONNECT is not proxied",
                )
                .await;
        }

        if !ctx.tls && ctx.snap.settings.redirect_http {
            if let Some(reply) = self.redirect(session, ctx)? {
                return self.write(session, ctx, reply).await;
            }
        }

        let raw_path = session.req_header().uri.path().to_string();
        let clean = match path::decode(&raw_path) {
            Ok(clean) => clean,
            Err(e) => {
                return self
                    .error(session, ctx, 400, "bad_path", &e.to_string())
                    .await
            }
        };
        ctx.route = classify(Listener::Public, clean.as_str());

        match ctx.route {
            Route::ClientConfig => {
                let method = &session.req_header().method;
                if method != Method::GET && method != Method::HEAD {
                    return self
                        .error(session, ctx, 405, "method_not_allowed", "GET only")
                        .await;
                }
                let reply = self.client_config(ctx)?;
                self.write(session, ctx, reply).await
            }
            Route::Static => {
                let reply = self.serve_static(session, ctx, &clean)?;
                self.write(session, ctx, reply).await
            }
            _ => {
                let declared = header_str(session, "content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if declared.is_some_and(|n| n > ctx.snap.settings.max_body_bytes) {
                    return self.payload_too_large(session, ctx).await;
                }
                ctx.upgrade = session.is_upgrade_req();
                if ctx.upgrade {
                    // An upgraded stream is idle between heartbeats by design; it must
                    // outlive one full heartbeat cycle on the client side too.
                    let idle = Some(ctx.snap.settings.tunnel_idle_timeout);
                    session.set_read_timeout(idle);
                    session.set_write_timeout(idle);
                }
                Ok(false)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let sticky = match ctx.route {
            Route::Realtime => sticky_worker(session.req_header().uri.query(), self.pool.len()),
            _ => None,
        };
        let Some((index, addr)) = self.pool.pick(sticky) else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy api worker",
            ));
        };
        ctx.worker = Some(index);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.group_key = self.pool.generation(index);
        let s = &ctx.snap.settings;
        let read = if ctx.upgrade {
            s.tunnel_idle_timeout
        } else if ctx.route == Route::Realtime && session.req_header().method == Method::GET {
            s.polling_read_timeout
        } else {
            s.api_read_timeout
        };
        peer.options.connection_timeout = Some(s.connect_timeout);
        peer.options.total_connection_timeout = Some(s.connect_timeout);
        peer.options.read_timeout = Some(read);
        peer.options.write_timeout = Some(read);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let peer = peer_ip(session);
        let client = forward::Client {
            peer,
            trusted: peer.is_some_and(|ip| ctx.snap.settings.is_trusted(ip)),
            tls: ctx.tls,
        };
        forward::apply(upstream, client, &ctx.request_id)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if session.was_upgraded() {
            return Ok(());
        }
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > ctx.snap.settings.max_body_bytes {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body over max_body_bytes",
                ));
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut pingora::http::ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        respond::secure(resp, ctx.tls)?;
        resp.insert_header("x-request-id", ctx.request_id.as_str())?;
        if resp.status.as_u16() == 101 && !ctx.tunnel_open {
            ctx.tunnel_open = true;
            self.metrics.tunnel_opened();
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        match ctx.worker.take() {
            // Pingora then asks `upstream_peer` again: another worker, or an immediate 503.
            Some(worker) => self.pool.connect_failed(&self.metrics, worker, &e),
            None => self.metrics.upstream_error("connect"),
        }
        e.set_retry(true);
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (status, code, message) = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(413)) => (
                413,
                "payload_too_large",
                "request body is larger than the gateway accepts",
            ),
            (_, ErrorType::HTTPStatus(503)) => {
                (503, "upstream_unavailable", "no healthy api worker")
            }
            (_, ErrorType::HTTPStatus(s)) => (*s, "error", "request failed"),
            (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                self.metrics.upstream_error("timeout");
                (
                    504,
                    "upstream_timeout",
                    "the api worker did not answer in time",
                )
            }
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError,
            ) => (
                503,
                "upstream_unavailable",
                "no api worker could be reached",
            ),
            (ErrorSource::Upstream, _) => {
                self.metrics.upstream_error("protocol");
                (502, "bad_gateway", "the api worker failed to answer")
            }
            (
                ErrorSource::Downstream,
                ErrorType::ReadError
                | ErrorType::WriteError
                | ErrorType::ConnectionClosed
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout,
            ) => (0, "", ""),
            (ErrorSource::Downstream, _) => (400, "bad_request", "malformed request"),
            _ => (500, "internal", "internal error"),
        };
        // Once a response has started (or the stream was upgraded) there is nothing valid
        // left to write; the connection just closes.
        if status > 0 && session.response_written().is_none() && !session.was_upgraded() {
            if let Ok(reply) = respond::error(status, code, message, ctx.tls) {
                let _ = self.write(session, ctx, reply).await;
            }
        }
        ctx.status = Some(status);
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.status)
            .unwrap_or(0);
        let req = session.req_header();
        Finished {
            method: &req.method,
            path: req.uri.path(),
            status,
            route: ctx.route,
            elapsed: ctx.start.elapsed(),
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            client: peer_ip(session),
            worker: ctx.worker,
            handoff: false,
            request_id: &ctx.request_id,
            tls: ctx.tls,
            error: e.map(|e| e as &dyn std::fmt::Display),
        }
        .record(&self.metrics);
        if let Some(enc) = ctx.encoding {
            if status == 200 || status == 304 {
                self.metrics.static_hit(enc);
            }
        }
        if ctx.tunnel_open {
            ctx.tunnel_open = false;
            self.metrics.tunnel_closed();
        }
        listener::rearm(session.stream());
    }
}

impl Gateway {
    async fn payload_too_large(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // The body was never read: the connection cannot carry another request.
        session.set_keepalive(None);
        self.error(
            session,
            ctx,
            413,
            "payload_too_large",
            "request body is larger than the gateway accepts",
        )
        .await
    }
}
