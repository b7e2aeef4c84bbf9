//! HTTP/2 on the public port (TLS with ALPN `h2`): Pingora's HTTP/2 server reads the
//! streams; the gateway serves each in `request_filter`, as it serves HTTP/1:
//!
//! - the one decision every request gets ([`crate::decide`]);
//! - a reply the gateway makes itself (static files, `/config.json`, redirects,
//!   refusals), the same replies HTTP/1 gets;
//! - or the request forwarded to its worker over HTTP/1.1 on the same kept-alive
//!   connections, with the same head rewriting and the same failures as HTTP/1
//!   ([`crate::serve::api`], [`crate::upstream`]): one upstream path whatever the
//!   client's protocol. Pingora's own proxy pipeline (its pool, its peer selection) is
//!   not used.
//!
//! `fail_to_proxy` words an error a phase returned in the JSON shape; `logging` writes the
//! access-log line and the metrics.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use btp_h1::body::{put_chunk, Body, LAST_CHUNK};
use btp_h1::request::{is_connection_field, BodyLength};
use btp_h1::response;
use bytes::{Bytes, BytesMut};
use http::Method;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::access::Finished;
use crate::assets;
use crate::config::Settings;
use crate::decide::{decide, Action, Facts};
use crate::forward;
use crate::live::{Live, Snapshot};
use crate::metrics::Metrics;
use crate::respond::{self, Reply};
use crate::route::Route;
use crate::serve::api::{
    passes_back, timed, ClientFail, Forwarder, Outgoing, Pumped, BODY_CHUNK, BODY_LATE,
    BODY_MISMATCH, BODY_TOO_LARGE, BUFFERED_BODY,
};
use crate::serve::reply;
use crate::upstream::failure::Broken;
use crate::upstream::Failure;

/// The gateway's HTTP/2 logic; one instance serves every HTTP/2 connection.
pub struct Gateway {
    /// Settings and static files, swapped whole by a reload; each request reads the
    /// snapshot it started with.
    pub live: Live,
    pub forwarder: Arc<Forwarder>,
    pub metrics: Arc<Metrics>,
}

/// Per-request state shared across phases.
pub struct Ctx {
    snap: Arc<Snapshot>,
    start: Instant,
    route: Route,
    request_id: String,
    tls: bool,
    client: forward::Client,
    worker: Option<usize>,
    /// Status of a response the gateway wrote itself.
    status: Option<u16>,
    error: Option<String>,
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
    /// Forward the request to its worker and relay the answer as HTTP/1 requests are
    /// ([`Forwarder`]): the same head rewriting, kept-alive connections, retry, deadlines
    /// and failures. The body is framed again both ways: DATA frames go to the worker
    /// under the request's `Content-Length` or as chunks, and the worker's body, however
    /// it was framed, comes back as DATA frames.
    async fn forward(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        sticky: Option<usize>,
        read_timeout: Duration,
    ) -> Result<bool> {
        let snap = ctx.snap.clone();
        let s = &snap.settings;
        session.set_write_timeout(Some(s.body_timeout));
        let body = if session.is_body_empty() {
            BodyLength::None
        } else {
            match header_str(session, "content-length").and_then(|v| v.trim().parse().ok()) {
                Some(n) => BodyLength::Length(n),
                None => BodyLength::Chunked,
            }
        };
        let req = session.req_header();
        let head_request = req.method == Method::HEAD;
        let mut head = Outgoing {
            method: req.method.as_str(),
            path_and_query: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            authority: req.uri.authority().map(|a| a.as_str()),
            client: ctx.client,
            request_id: &ctx.request_id,
            body,
        }
        .head(
            req.headers
                .iter()
                .filter(|(name, _)| !is_connection_field(name.as_str()))
                .map(|(name, value)| (name.as_str(), value.as_bytes())),
            |name| req.headers.get(name).map(|v| v.as_bytes()),
        );

        let deadline = Instant::now() + s.body_timeout;
        let streamed = match body {
            BodyLength::None => false,
            BodyLength::Length(n) if n <= BUFFERED_BODY => {
                if let Err(fail) = read_whole(session, &mut head, n, deadline).await {
                    return self.client_failed(session, ctx, fail).await;
                }
                false
            }
            BodyLength::Length(_) | BodyLength::Chunked => true,
        };
        let conns = self.forwarder.conns();
        let mut up = match conns.checkout(sticky, streamed, s.connect_timeout).await {
            Ok(up) => up,
            Err(refused) => {
                return self
                    .failed(session, ctx, Failure::Unavailable(refused))
                    .await
            }
        };
        ctx.worker = Some(up.index);
        if streamed {
            if let Err(e) = timed(read_timeout, up.stream.write_all(&head)).await {
                return self.failed(session, ctx, Failure::io(e)).await;
            }
            let pumped = pump(session, &mut up.stream, body, deadline, read_timeout, s).await;
            match pumped {
                Ok(()) => {}
                // The worker has a request it will never see the end of; its connection
                // goes with it.
                Err(Pumped::Client(fail)) => return self.client_failed(session, ctx, fail).await,
                Err(Pumped::Worker(failure)) => return self.failed(session, ctx, failure).await,
            }
        }

        let mut scratch = Vec::new();
        let whole = (!streamed).then_some(head.as_slice());
        let asked = self
            .forwarder
            .ask(&mut up, whole, &mut scratch, head_request, read_timeout, s)
            .await;
        ctx.worker = Some(up.index);
        let head_len = match asked {
            Ok(len) => len,
            Err(failure) => return self.failed(session, ctx, failure).await,
        };
        let relayed = self
            .relay(
                session,
                ctx,
                &mut up.stream,
                &mut scratch,
                head_len,
                head_request,
                read_timeout,
            )
            .await;
        match relayed {
            Ok(true) => conns.check_in(up),
            Ok(false) => {}
            Err(Relay::Downstream(e)) => return Err(e),
            Err(Relay::Worker(failure)) => return self.failed(session, ctx, failure).await,
            Err(Relay::BrokenOff(failure)) => {
                // The head is out: the stream is reset rather than ended, so the client
                // cannot take a cut body for a whole one.
                if let Some(kind) = failure.metric() {
                    self.metrics.upstream_error(kind);
                }
                let e = Error::explain(ErrorType::ReadError, failure.to_string());
                ctx.error = Some(failure.to_string());
                return Err(e);
            }
        }
        Ok(true)
    }

    /// Relay the worker's answer, whose head ends at `head_len` in `scratch`, as the
    /// stream's response: whether the worker's connection can carry another request.
    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        worker: &mut tokio::net::TcpStream,
        scratch: &mut Vec<u8>,
        head_len: usize,
        head_request: bool,
        read_timeout: Duration,
    ) -> std::result::Result<bool, Relay> {
        let broken_head = || Relay::Worker(Failure::Broken(Broken::Head));
        let (header, framing, mut reusable) = {
            let mut fields = response::fields();
            let Ok(Some(answer)) = response::parse(&scratch[..head_len], &mut fields, head_request)
            else {
                return Err(broken_head());
            };
            let mut header = ResponseHeader::build(answer.status, Some(answer.headers.len() + 12))
                .map_err(|_| broken_head())?;
            // The body is framed again: the worker's `Transfer-Encoding` says nothing here.
            let kept = answer.headers.iter().filter(|h| {
                passes_back(h.name) && !h.name.eq_ignore_ascii_case("transfer-encoding")
            });
            for h in kept {
                header
                    .append_header(h.name.to_owned(), h.value)
                    .map_err(|_| broken_head())?;
            }
            respond::secure(&mut header, ctx.tls).map_err(Relay::Downstream)?;
            header
                .insert_header("x-request-id", ctx.request_id.as_str())
                .map_err(Relay::Downstream)?;
            (header, answer.framing, answer.keep_alive)
        };
        let mut body = Body::response(framing);
        session
            .write_response_header(Box::new(header), body.is_done())
            .await
            .map_err(Relay::Downstream)?;
        let mut start = head_len;
        while !body.is_done() {
            let mut data = BytesMut::new();
            let bytes = &scratch[start..];
            let fed = body
                .feed(bytes, |piece| data.extend_from_slice(piece))
                .map_err(|_| Relay::BrokenOff(Failure::Broken(Broken::Body)))?;
            // Bytes past the body's end: the worker and the gateway disagree on framing.
            reusable &= fed.used == bytes.len();
            if !data.is_empty() || fed.done {
                session
                    .write_response_body(Some(data.freeze()), fed.done)
                    .await
                    .map_err(Relay::Downstream)?;
            }
            if fed.done {
                break;
            }
            scratch.clear();
            scratch.reserve(BODY_CHUNK);
            start = 0;
            match timed(read_timeout, worker.read_buf(&mut *scratch)).await {
                Ok(0) if body.until_close() => {
                    session
                        .write_response_body(None, true)
                        .await
                        .map_err(Relay::Downstream)?;
                    return Ok(false);
                }
                Ok(0) => {
                    let eof = Failure::io(io::ErrorKind::UnexpectedEof.into());
                    return Err(Relay::BrokenOff(eof));
                }
                Ok(_) => {}
                Err(e) => return Err(Relay::BrokenOff(Failure::io(e))),
            }
        }
        Ok(reusable)
    }

    /// The worker failed the request: its JSON error.
    async fn failed(&self, session: &mut Session, ctx: &mut Ctx, failure: Failure) -> Result<bool> {
        if let Some(kind) = failure.metric() {
            self.metrics.upstream_error(kind);
        }
        ctx.error = Some(failure.to_string());
        let reply = respond::error(failure.status(), failure.code(), failure.message(), ctx.tls)?;
        self.write(session, ctx, reply).await
    }

    async fn client_failed(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        fail: ClientFail,
    ) -> Result<bool> {
        match fail {
            ClientFail::Answer(status, code, message) => {
                ctx.error = Some(message.to_string());
                let reply = respond::error(status, code, message, ctx.tls)?;
                self.write(session, ctx, reply).await
            }
            ClientFail::Gone(e) => {
                Err(Error::because(ErrorType::ReadError, "reading the request body", e).into_down())
            }
        }
    }
}

/// Why relaying an answer stopped.
enum Relay {
    /// Writing to the client failed.
    Downstream(Box<Error>),
    /// The worker's head is not one to relay: answered with its JSON error.
    Worker(Failure),
    /// The worker's body broke off after its head went out.
    BrokenOff(Failure),
}

/// The next piece of the request body (`None` at its end), by `deadline`.
async fn next_data(
    session: &mut Session,
    deadline: Instant,
) -> std::result::Result<Option<Bytes>, ClientFail> {
    match tokio::time::timeout_at(deadline.into(), session.read_request_body()).await {
        Err(_) => Err(BODY_LATE),
        Ok(Ok(data)) => Ok(data),
        Ok(Err(e)) => Err(ClientFail::Gone(io::Error::other(e.to_string()))),
    }
}

/// Read a body of `n` bytes whole onto `out`, by `deadline`.
async fn read_whole(
    session: &mut Session,
    out: &mut Vec<u8>,
    n: u64,
    deadline: Instant,
) -> std::result::Result<(), ClientFail> {
    let mut left = n;
    while let Some(data) = next_data(session, deadline).await? {
        left = left.checked_sub(data.len() as u64).ok_or(BODY_MISMATCH)?;
        out.extend_from_slice(&data);
    }
    match left {
        0 => Ok(()),
        _ => Err(BODY_MISMATCH),
    }
}

/// Stream the request body to the worker, framed as `body` says, counted against
/// `max_body_bytes`, by `deadline`.
async fn pump(
    session: &mut Session,
    worker: &mut tokio::net::TcpStream,
    body: BodyLength,
    deadline: Instant,
    read_timeout: Duration,
    s: &Settings,
) -> std::result::Result<(), Pumped> {
    let chunked = body == BodyLength::Chunked;
    let mut left = match body {
        BodyLength::Length(n) => n,
        BodyLength::None | BodyLength::Chunked => 0,
    };
    let (mut read, mut out) = (0u64, Vec::with_capacity(BODY_CHUNK + 16));
    loop {
        let data = next_data(session, deadline).await.map_err(Pumped::Client)?;
        out.clear();
        match &data {
            Some(data) => {
                read += data.len() as u64;
                if read > s.max_body_bytes {
                    return Err(Pumped::Client(BODY_TOO_LARGE));
                }
                if chunked {
                    put_chunk(&mut out, data);
                } else {
                    left = left
                        .checked_sub(data.len() as u64)
                        .ok_or(Pumped::Client(BODY_MISMATCH))?;
                    out.extend_from_slice(data);
                }
            }
            None if chunked => out.extend_from_slice(LAST_CHUNK),
            None if left > 0 => return Err(Pumped::Client(BODY_MISMATCH)),
            None => {}
        }
        if !out.is_empty() {
            timed(read_timeout, worker.write_all(&out))
                .await
                .map_err(|e| Pumped::Worker(Failure::io(e)))?;
        }
        if data.is_none() {
            return Ok(());
        }
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
            client: forward::Client {
                peer: None,
                trusted: false,
                tls: false,
            },
            worker: None,
            status: None,
            error: None,
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
        ctx.client = forward::Client {
            peer,
            trusted: peer.is_some_and(|ip| ctx.snap.settings.is_trusted(ip)),
            tls: ctx.tls,
        };
        let req = session.req_header();
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = req.uri.authority().map(|a| a.as_str());
        let facts = Facts {
            method: req.method.as_str(),
            target,
            host: header_str(session, "host").or(authority),
            client: ctx.client,
            request_id: header_str(session, "x-request-id"),
            content_length: header_str(session, "content-length")
                .and_then(|v| v.trim().parse().ok()),
            websocket: false,
        };
        let decision = decide(
            &facts,
            &ctx.snap.settings,
            self.forwarder.conns().pool().len(),
        );
        ctx.route = decision.route;
        ctx.request_id = decision.request_id;
        let reply = match &decision.action {
            Action::Forward {
                sticky,
                read_timeout,
            } => return self.forward(session, ctx, *sticky, *read_timeout).await,
            // Extended CONNECT is not offered: an HTTP/2 request is never an upgrade.
            Action::Upgrade { sticky } => {
                let read_timeout = ctx.snap.settings.api_read_timeout;
                return self.forward(session, ctx, *sticky, read_timeout).await;
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
                ctx.encoding = answer.encoding();
                answer.into_reply()
            }
            action => {
                if matches!(action, Action::Refuse { close: true, .. }) {
                    session.set_keepalive(None);
                }
                reply::made(action, &ctx.snap, ctx.tls)?
            }
        };
        self.write(session, ctx, reply).await
    }

    /// Never reached: every request is served in `request_filter`.
    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "every request is served in request_filter",
        ))
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (status, code, message) = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(413)) => (
                413,
                "payload_too_large",
                "request body is larger than the gateway accepts",
            ),
            (_, ErrorType::HTTPStatus(s)) => (*s, "error", "request failed"),
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
            error: match (e, &ctx.error) {
                (_, Some(error)) => Some(error as &dyn std::fmt::Display),
                (Some(e), None) => Some(e as &dyn std::fmt::Display),
                (None, None) => None,
            },
        }
        .record(&self.metrics);
        if let Some(enc) = ctx.encoding {
            if status == 200 || status == 304 {
                self.metrics.static_hit(enc);
            }
        }
    }
}
