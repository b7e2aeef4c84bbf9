//! HTTP/2 on the public port (TLS with ALPN `h2`): Pingora's HTTP/2 server runs the
//! request as phases, each method the moment it runs in; what to do with the request is
//! the edge's one decision ([`crate::edge::decide`]), as for HTTP/1.
//!
//! - `request_filter`: decide; answer what the gateway answers itself (static files,
//!   `/config.json`, redirects, refusals) with the replies HTTP/1 gets.
//! - `upstream_peer`: the worker the decision names (sid-sticky or round robin) with its
//!   timeouts; no healthy worker is an immediate 503.
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
use crate::edge::decide::{decide, Action, Facts};
use crate::edge::made_reply;
use crate::forward;
use crate::metrics::Metrics;
use crate::reload::{Live, Snapshot};
use crate::respond::{self, Reply};
use crate::route::Route;
use crate::upstream::failure::Broken;
use crate::upstream::{Failure, Pool, Refused};

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
    sticky: Option<usize>,
    read_timeout: Duration,
    /// Status of a response the gateway wrote itself.
    status: Option<u16>,
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
            sticky: None,
            read_timeout: Duration::ZERO,
            status: None,
            body_bytes: 0,
            encoding: None,
        }
    }

    /// No downstream modules: Pingora's default is a (disabled) compression module that
    /// would still run on every response, and static variants are precompressed anyway.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn early_request_filter(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.start = Instant::now();
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        let peer = peer_ip(session);
        let req = session.req_header();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = req.uri.authority().map(|a| a.as_str());
        let facts = Facts {
            method: req.method.as_str(),
            target,
            host: header_str(session, "host").or(authority),
            client: forward::Client {
                peer,
                trusted: peer.is_some_and(|ip| ctx.snap.settings.is_trusted(ip)),
                tls: ctx.tls,
            },
            request_id: header_str(session, "x-request-id"),
            content_length: header_str(session, "content-length")
                .and_then(|v| v.trim().parse().ok()),
            websocket: false,
        };
        let decision = decide(&facts, &ctx.snap.settings, self.pool.len());
        ctx.route = decision.route;
        ctx.request_id = decision.request_id;
        let reply = match &decision.action {
            Action::Forward {
                sticky,
                read_timeout,
            } => {
                ctx.sticky = *sticky;
                ctx.read_timeout = *read_timeout;
                return Ok(false);
            }
            Action::Upgrade { sticky } => {
                ctx.sticky = *sticky;
                ctx.read_timeout = ctx.snap.settings.api_read_timeout;
                return Ok(false);
            }
            Action::Static(path) => {
                let req = session.req_header();
                let answer = ctx.snap.store.serve(assets::Request {
                    method: &req.method,
                    tls: ctx.tls,
                    path,
                    accept: header_str(session, "accept"),
                    accept_encoding: header_str(session, "accept-encoding"),
                    if_none_match: header_str(session, "if-none-match"),
                })?;
                ctx.encoding = answer.encoding;
                answer.reply
            }
            action => {
                if matches!(action, Action::Refuse { close: true, .. }) {
                    session.set_keepalive(None);
                }
                made_reply(action, &ctx.snap.settings.client_config, ctx.tls)?
            }
        };
        self.write(session, ctx, reply).await
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some((index, addr)) = self.pool.pick(ctx.sticky) else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy api worker",
            ));
        };
        ctx.worker = Some(index);
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.group_key = self.pool.generation(index);
        let s = &ctx.snap.settings;
        let read = ctx.read_timeout;
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
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
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
                upstream(&Failure::Unavailable(Refused::NoneHealthy))
            }
            (_, ErrorType::HTTPStatus(s)) => (*s, "error", "request failed"),
            (ErrorSource::Upstream, ErrorType::ReadTimedout | ErrorType::WriteTimedout) => {
                self.metrics.upstream_error("timeout");
                upstream(&Failure::Timeout)
            }
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::ConnectError,
            ) => upstream(&Failure::Unavailable(Refused::Unreachable)),
            (ErrorSource::Upstream, _) => {
                self.metrics.upstream_error("protocol");
                upstream(&Failure::Broken(Broken::Head))
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
        // Once a response has started there is nothing valid left to write; the stream
        // just ends.
        if status > 0 && session.response_written().is_none() {
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
    }
}

/// The status, code and message of an upstream failure.
fn upstream(failure: &Failure) -> (u16, &'static str, &'static str) {
    (failure.status(), failure.code(), failure.message())
}
