//! The front door: every connection of the public port, from its accept to its close.
//!
//! [`listen`] accepts it, counts it against the connection limits ([`gate`]) and finishes
//! its TLS handshake under the header deadline. An HTTP/2 connection (ALPN `h2`) then goes
//! to Pingora's HTTP/2 server, which serves it with the same decision
//! ([`crate::decide`]) and servers ([`crate::serve::h2`]). Every HTTP/1 connection is served here, request after
//! request:
//!
//! 1. the head is read once ([`btp_h1::request`]), under one deadline at a time: the
//!    keep-alive timeout while nothing of a request has come (the header timeout for a
//!    new connection's first request), then the header timeout from its first byte; a
//!    head is looked at only once its end has arrived, so a trickled head costs one pass,
//!    and one over `max_header_bytes` is 431 at once;
//! 2. it gets one [`crate::decide::Decision`];
//! 3. a thin server acts on it: a reply the gateway makes ([`crate::serve::reply`]:
//!    static files, `/config.json`, redirects, refusals), a request forwarded to a worker
//!    with its body ([`crate::serve::api`]), or an upgrade handed over or relayed on a
//!    task of its own ([`crate::serve::upgrade`]);
//! 4. one access-log line and the request metrics ([`crate::access`]); then the next
//!    head, unless the connection closes (the client asked, a body was left unread, an
//!    error, or the gateway is draining — answers then say `Connection: close`).

pub mod gate;
pub mod h2_deadline;
pub mod listen;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use btp_h1::request::{self, BodyLength, Parsed, RequestHead, Version};
use http::Method;
use pingora::apps::ServerApp;
use pingora::protocols::{Shutdown, Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::access::Finished;
use crate::assets::{self, Answer};
use crate::decide::{decide, Action, Decision, Facts};
use crate::forward::Client;
use crate::live::{Live, Snapshot};
use crate::metrics::Metrics;
use crate::respond;
use crate::route::Route;
use crate::serve::api::{self, Forwarder, Next};
use crate::serve::reply::{self, Out};
use crate::serve::upgrade::{Tunnels, Upgrade};
use gate::Slot;

/// The public listeners' application.
pub struct Edge<A> {
    /// Pingora's HTTP/2 server.
    h2: Arc<A>,
    /// Settings and static files, swapped whole by a reload; each request reads the
    /// snapshot it started with.
    live: Live,
    tunnels: Tunnels,
    forwarder: Arc<Forwarder>,
    metrics: Arc<Metrics>,
    /// Set when the keep-alive drain is over: a connection waiting for its next request
    /// then closes.
    closing: watch::Sender<bool>,
}

impl<A> Edge<A> {
    pub fn new(
        h2: Arc<A>,
        live: Live,
        tunnels: Tunnels,
        forwarder: Arc<Forwarder>,
        metrics: Arc<Metrics>,
    ) -> Edge<A> {
        Edge {
            h2,
            live,
            tunnels,
            forwarder,
            metrics,
            closing: watch::Sender::new(false),
        }
    }
}

impl<A> Edge<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    /// Serve one connection to its end; `slot` is its place among the gateway's
    /// connections.
    pub async fn serve(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch, slot: &Slot) {
        if io.selected_alpn_proto() == Some(ALPN::H2) {
            let s = &self.live.load().settings;
            let io = Box::new(h2_deadline::H2Deadlines::new(
                io,
                s.keepalive_timeout,
                s.header_timeout,
            ));
            let mut next = self.h2.process_new(io, shutdown).await;
            while let Some(io) = next {
                next = self.h2.process_new(io, shutdown).await;
            }
            return;
        }
        self.serve_h1(io, shutdown, slot).await;
    }

    /// Called once the listeners stopped accepting (shutdown or graceful upgrade). Until
    /// [`KEEPALIVE_DRAIN`] has passed, a request a client sends on a kept-alive
    /// connection is still read and answered, with `Connection: close`, so the client
    /// reconnects (to the new process, in an upgrade) instead of seeing a reset; then the
    /// connections waiting for a request close.
    pub async fn cleanup(&self) {
        tokio::time::sleep(KEEPALIVE_DRAIN).await;
        self.closing.send_replace(true);
        self.h2.cleanup().await
    }
}

/// Shorter than Pingora's grace period (`grace_period_seconds`, 1 s), so that a request
/// read at the end of it still has time to be answered.
const KEEPALIVE_DRAIN: Duration = Duration::from_millis(500);

/// Bytes asked of the client per read while a head is read.
const HEAD_READ: usize = 4096;

/// One HTTP/1 connection.
struct Conn<'a> {
    io: Stream,
    peer: Option<IpAddr>,
    tls: bool,
    /// Read from the client and not used yet: a head, or what follows it.
    buf: Vec<u8>,
    /// The forwarder's buffer, kept across the connection's requests.
    scratch: Vec<u8>,
    shutdown: &'a ShutdownWatch,
    slot: &'a Slot,
}

/// What becomes of a connection after a request.
enum After {
    KeepAlive,
    Close,
    /// The connection becomes this WebSocket, with the bytes the client sent after its
    /// head.
    Upgrade(Box<Upgrade>, Vec<u8>),
}

impl From<Next> for After {
    fn from(next: Next) -> After {
        match next {
            Next::KeepAlive => After::KeepAlive,
            Next::Close => After::Close,
        }
    }
}

/// How reading a head ended.
enum Read {
    /// `buf` starts with a whole head.
    Head,
    /// The connection ends without a request to answer (the client closed it between
    /// requests, or it stayed idle past the keep-alive timeout, or the drain ended).
    Gone,
    /// Answer with this refusal, then close.
    Refused(request::Refusal),
}

const HEAD_LATE: request::Refusal = request::Refusal {
    status: 408,
    code: "request_timeout",
    message: "request head not received in time",
};

impl<A> Edge<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn serve_h1(&self, io: Stream, shutdown: &ShutdownWatch, slot: &Slot) {
        let tls = io.get_ssl_digest().is_some();
        let peer = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut conn = Conn {
            io,
            peer,
            tls,
            buf: Vec::new(),
            scratch: Vec::new(),
            shutdown,
            slot,
        };
        // Bounded by the client: each round serves one of its requests, and a connection
        // that stops sending ends in `read_head` (end of stream, a deadline or the drain).
        for served in 0u64.. {
            let waiting = self.live.load_full();
            let read = self.read_head(&mut conn, &waiting, served == 0).await;
            // The request is served by what is current when its head arrived: a reload
            // while a kept-alive connection waited applies to its next request.
            let snap = self.live.load_full();
            let after = match read {
                Read::Head => self.serve_request(&mut conn, &snap).await,
                Read::Gone => After::Close,
                Read::Refused(refusal) => {
                    self.refuse_head(&mut conn, &snap, refusal).await;
                    After::Close
                }
            };
            match after {
                After::KeepAlive => {}
                After::Close => break,
                After::Upgrade(upgrade, early) => {
                    // A task of its own: this connection's task (≈ 9 KiB with its TLS
                    // handshake state) ends now instead of living as long as the tunnel.
                    let tunnels = self.tunnels.clone();
                    tokio::spawn(tunnels.serve(conn.io, *upgrade, early, snap));
                    return;
                }
            }
        }
        Shutdown::shutdown(&mut *conn.io).await;
    }

    /// Read until `conn.buf` starts with a whole head.
    async fn read_head(&self, conn: &mut Conn<'_>, snap: &Snapshot, first: bool) -> Read {
        let s = &snap.settings;
        let mut closing = self.closing.subscribe();
        // Until its first byte, a request is waited for as long as a kept-alive
        // connection may idle; a new connection's first request has the header timeout.
        let mut deadline = None;
        let idle_until = Instant::now()
            + if first {
                s.header_timeout
            } else {
                s.keepalive_timeout
            };
        let mut looked = 0;
        // Bounded: every round adds at least one byte, and a head has at most
        // `max_header_bytes`.
        loop {
            if !conn.buf.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + s.header_timeout);
                if request::head_end(&conn.buf, looked).is_some()
                    || conn.buf.len() >= s.max_header_bytes
                {
                    return Read::Head;
                }
                looked = conn.buf.len();
            }
            if conn.buf.capacity() - conn.buf.len() < HEAD_READ {
                conn.buf
                    .reserve(HEAD_READ.min(s.max_header_bytes - conn.buf.len()).max(1));
            }
            let until = deadline.unwrap_or(idle_until);
            // Waiting for a request's first byte, the connection is idle: its place may be
            // given to a newcomer when the gateway is full.
            let idle = conn.buf.is_empty().then(|| conn.slot.idle());
            let read = tokio::select! {
                biased;
                read = tokio::time::timeout_at(until, conn.io.read_buf(&mut conn.buf)) => read,
                _ = closing.wait_for(|closing| *closing), if idle.is_some() => return Read::Gone,
                () = async { if let Some(idle) = &idle { idle.evicted().await } }, if idle.is_some() => return Read::Gone,
            };
            drop(idle);
            match read {
                Ok(Ok(0)) | Ok(Err(_)) => return Read::Gone,
                Ok(Ok(_)) => {}
                Err(_) if conn.buf.is_empty() => return Read::Gone,
                Err(_) => return Read::Refused(HEAD_LATE),
            }
        }
    }

    /// Answer a head that could not be read as a request.
    async fn refuse_head(&self, conn: &mut Conn<'_>, snap: &Snapshot, refusal: request::Refusal) {
        let request_id = crate::forward::request_id(None, false);
        let out = Out {
            request_id: &request_id,
            close: true,
            head_only: false,
            send_timeout: snap.settings.body_timeout,
        };
        let started = std::time::Instant::now();
        let written = reply::error(
            &mut conn.io,
            refusal.status,
            refusal.code,
            refusal.message,
            conn.tls,
            out,
        )
        .await;
        Finished {
            method: &"-",
            path: "-",
            status: if written.is_ok() { refusal.status } else { 0 },
            route: Route::Static,
            elapsed: started.elapsed(),
            bytes_in: 0,
            bytes_out: written.unwrap_or(0),
            client: conn.peer,
            worker: None,
            handoff: false,
            request_id: &request_id,
            tls: conn.tls,
            error: Some(&refusal.message),
        }
        .record(&self.metrics);
    }

    /// Serve the request whose head starts `conn.buf`.
    async fn serve_request(&self, conn: &mut Conn<'_>, snap: &Snapshot) -> After {
        let started = std::time::Instant::now();
        let s = &snap.settings;
        let buf = std::mem::take(&mut conn.buf);
        let mut fields = request::fields();
        let head = match request::parse(&buf, &mut fields, s.max_header_bytes) {
            Parsed::Head(head) => head,
            Parsed::Refused(refusal) => {
                self.refuse_head(conn, snap, refusal).await;
                return After::Close;
            }
            // `read_head` returns once the head is whole or too large.
            Parsed::Partial => {
                self.refuse_head(conn, snap, request::HEAD_TOO_LARGE).await;
                return After::Close;
            }
        };
        let client = Client {
            peer: conn.peer,
            trusted: conn.peer.is_some_and(|ip| s.is_trusted(ip)),
            tls: conn.tls,
        };
        let facts = facts(&head, client);
        let decision = decide(&facts, s, self.forwarder.conns().pool().len());
        // What the client sent after the head: its body, then perhaps the next request.
        let mut rest = buf[head.len..].to_vec();
        let draining = *conn.shutdown.borrow() || *self.closing.borrow();
        let keep_alive = head.keep_alive && !draining;
        let head_only = head.method == "HEAD";

        match &decision.action {
            Action::Forward {
                sticky,
                read_timeout,
            } => {
                let (path_and_query, authority) = target_parts(head.target);
                let req = api::Request {
                    head: &head,
                    path_and_query,
                    authority,
                    client,
                    request_id: &decision.request_id,
                    sticky: *sticky,
                    read_timeout: *read_timeout,
                    close: !keep_alive,
                };
                let mut outcome = api::Outcome::default();
                let next = self
                    .forwarder
                    .exchange(
                        &mut conn.io,
                        &mut rest,
                        &req,
                        s,
                        &mut conn.scratch,
                        &mut outcome,
                    )
                    .await;
                self.finished(&head, &decision, started, conn, &outcome);
                conn.buf = rest;
                next.into()
            }
            Action::Upgrade { sticky } => {
                let (path_and_query, _) = target_parts(head.target);
                let upgrade = Upgrade::new(
                    &head,
                    path_and_query,
                    client,
                    decision.request_id.clone(),
                    *sticky,
                );
                After::Upgrade(Box::new(upgrade), rest)
            }
            action => {
                // A body the gateway does not read leaves the connection unusable.
                let unread = match head.body {
                    BodyLength::None | BodyLength::Length(0) => false,
                    BodyLength::Length(_) | BodyLength::Chunked => true,
                };
                let close =
                    !keep_alive || unread || matches!(action, Action::Refuse { close: true, .. });
                let answer = match self.reply(&head, &decision, client, snap) {
                    Ok(answer) => answer,
                    Err(_) => match respond::error(500, "internal", "internal error", client.tls) {
                        Ok(reply) => Answer::Made(Box::new(reply)),
                        Err(_) => return After::Close,
                    },
                };
                let status = answer.status();
                let out = Out {
                    request_id: &decision.request_id,
                    close,
                    head_only,
                    send_timeout: s.body_timeout,
                };
                let written = reply::answer(&mut conn.io, &answer, out).await;
                let outcome = api::Outcome {
                    worker: None,
                    status: if written.is_ok() { status } else { 0 },
                    bytes_in: 0,
                    bytes_out: *written.as_ref().unwrap_or(&0),
                    error: written.as_ref().err().map(|e| e.to_string()),
                };
                self.finished(&head, &decision, started, conn, &outcome);
                if let Some(encoding) = answer.encoding() {
                    if status == 200 || status == 304 {
                        self.metrics.static_hit(encoding);
                    }
                }
                conn.buf = rest;
                if close || written.is_err() {
                    After::Close
                } else {
                    After::KeepAlive
                }
            }
        }
    }

    /// The reply the gateway makes itself for `decision`.
    fn reply<'s>(
        &self,
        head: &RequestHead<'_, '_>,
        decision: &Decision,
        client: Client,
        snap: &'s Snapshot,
    ) -> pingora::Result<Answer<'s>> {
        let header = |name: &str| head.header(name).and_then(|v| std::str::from_utf8(v).ok());
        match &decision.action {
            Action::Static(path) => {
                let method = Method::from_bytes(head.method.as_bytes()).unwrap_or(Method::GET);
                snap.store.serve(assets::Request {
                    method: &method,
                    tls: client.tls,
                    path,
                    accept: header("accept"),
                    accept_encoding: header("accept-encoding"),
                    if_none_match: header("if-none-match"),
                })
            }
            action => Ok(Answer::Made(Box::new(reply::made(
                action, snap, client.tls,
            )?))),
        }
    }

    fn finished(
        &self,
        head: &RequestHead<'_, '_>,
        decision: &Decision,
        started: std::time::Instant,
        conn: &Conn<'_>,
        outcome: &api::Outcome,
    ) {
        Finished {
            method: &head.method,
            path: &decision.path,
            status: outcome.status,
            route: decision.route,
            elapsed: started.elapsed(),
            bytes_in: outcome.bytes_in,
            bytes_out: outcome.bytes_out,
            client: conn.peer,
            worker: outcome.worker,
            handoff: false,
            request_id: &decision.request_id,
            tls: conn.tls,
            error: outcome.error.as_ref().map(|e| e as &dyn std::fmt::Display),
        }
        .record(&self.metrics);
    }
}

/// The facts of an HTTP/1 head.
fn facts<'a>(head: &'a RequestHead<'_, 'a>, client: Client) -> Facts<'a> {
    let text = |v: &'a [u8]| std::str::from_utf8(v).ok();
    Facts {
        method: head.method,
        target: head.target,
        host: head.host.and_then(text),
        client,
        request_id: head.header("x-request-id").and_then(text),
        content_length: match head.body {
            BodyLength::Length(n) => Some(n),
            _ => None,
        },
        websocket: head.version == Version::Http11
            && matches!(head.body, BodyLength::None | BodyLength::Length(0))
            && head
                .upgrade
                .is_some_and(|v| btp_h1::has_token(v, "websocket")),
    }
}

/// The origin-form part of a target, and its authority when it came in absolute form.
fn target_parts(target: &str) -> (&str, Option<&str>) {
    if target.starts_with('/') {
        return (target, None);
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .unwrap_or(target);
    match rest.find('/') {
        Some(slash) => (&rest[slash..], Some(&rest[..slash])),
        None => ("/", Some(rest)),
    }
}
