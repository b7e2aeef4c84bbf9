//! WebSocket upgrades on the public port, as their own connections.
//!
//! A realtime client holds a WebSocket open for hours, so what a tunnel keeps between
//! frames is what it costs (bench/README.md). The edge reads the upgrade's head, the
//! decision routes it (sid-sticky), and [`Tunnels::serve`] takes the connection:
//!
//! - under `btp up`, a plain-TCP client whose worker this gateway supervises is handed
//!   over: the worker gets the client's socket itself with the forwarded head and the
//!   gateway's response headers (`btp_handoff`, `gateway.websocket_handoff`), answers it,
//!   and owns it; nothing of it stays here. The head fits the worker's limits by
//!   construction: both use `btp_h1::limits`;
//! - otherwise (TLS, a worker not supervised here, a full hand-over queue) the head goes
//!   to the worker, its answer comes back with the gateway's headers, and on a `101` the
//!   bytes are relayed ([`crate::serve::relay`]) under the heartbeat-derived idle limit.
//!   Bytes the client sent after its head go to the worker only after its `101`; any
//!   other answer is relayed and the connection closed, so they never reach the worker as
//!   a request.
//!
//! Graceful shutdown treats a tunnel as an upgraded session: it is left to end by itself
//! (the API workers close their sockets in order) until the process exits.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use btp_h1::request::RequestHead;
use btp_h1::{put_header, response};
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, IO};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access::Finished;
use crate::config::Settings;
use crate::forward::{self, Client, Forwarding};
use crate::live::Snapshot;
use crate::metrics::Metrics;
use crate::respond;
use crate::route::Route;
use crate::serve::relay::{self, End};
use crate::serve::reply;
use crate::upstream::failure::Broken;
use crate::upstream::{Failure, Pool};

/// An upgrade the edge routed, ready to forward.
pub struct Upgrade {
    /// The head the worker gets.
    head: Vec<u8>,
    path: String,
    client: Client,
    request_id: String,
    sticky: Option<usize>,
}

impl Upgrade {
    /// The forwarded head for `head` (a WebSocket upgrade the decision routed to the
    /// realtime route): the client's headers but its connection ones, `Upgrade` and
    /// `Connection` restated, the forwarding headers and the request id.
    pub fn new(
        head: &RequestHead<'_, '_>,
        path_and_query: &str,
        client: Client,
        request_id: String,
        sticky: Option<usize>,
    ) -> Upgrade {
        let mut out = Vec::with_capacity(head.len + 256);
        for part in [b"GET ", path_and_query.as_bytes(), b" HTTP/1.1\r\n"] {
            out.extend_from_slice(part);
        }
        for h in head.headers {
            if !head.is_connection_header(h.name) && forward::passes(h.name) {
                put_header(&mut out, h.name.as_bytes(), h.value);
            }
        }
        put_header(&mut out, b"upgrade", b"websocket");
        put_header(&mut out, b"connection", b"Upgrade");
        let forwarding = Forwarding::decide(client, |name| head.header(name), None);
        forwarding.put(&mut out);
        put_header(&mut out, b"x-request-id", request_id.as_bytes());
        out.extend_from_slice(b"\r\n");
        Upgrade {
            head: out,
            path: path_and_query
                .split_once('?')
                .map_or(path_and_query, |(p, _)| p)
                .to_string(),
            client,
            request_id,
            sticky,
        }
    }
}

/// What the upgrade path needs: the worker pool and the metrics.
#[derive(Clone)]
pub struct Tunnels {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
}

/// One upgrade request in flight, for its access-log line.
struct Exchange {
    start: Instant,
    path: String,
    client: forward::Client,
    request_id: String,
    worker: Option<usize>,
}

/// A tunnel whose `101` the client has: the two sides and what the access log needs.
struct Open {
    client: Stream,
    worker: TcpStream,
    ex: Exchange,
    /// Bytes already relayed during the handshake (sent ahead by either side).
    early_in: u64,
    early_out: u64,
}

impl Tunnels {
    /// Serve `upgrade`, whose head the client sent ahead of `early` (bytes it sent after
    /// it), to its end (the worker's answer relayed, or the tunnel closed). Meant to run
    /// as a task of its own.
    pub async fn serve(
        self,
        client: Stream,
        upgrade: Upgrade,
        early: Vec<u8>,
        snap: Arc<Snapshot>,
    ) {
        // The handshake's state (heads, parsers, timers) is boxed so that it is freed when
        // the handshake ends: the task keeps only what the relay needs for hours.
        let open = Box::pin(self.open(client, upgrade, early, &snap.settings)).await;
        if let Some(open) = open {
            self.relay(open, snap.settings.tunnel_idle_timeout).await;
        }
    }

    /// Route the upgrade to a worker and relay its answer; `Some` when it was a `101`.
    async fn open(
        &self,
        mut client: Stream,
        upgrade: Upgrade,
        early: Vec<u8>,
        s: &Settings,
    ) -> Option<Open> {
        let Upgrade {
            head,
            path,
            client: who,
            request_id,
            sticky,
        } = upgrade;
        let mut ex = Exchange {
            start: Instant::now(),
            path,
            client: who,
            request_id,
            worker: None,
        };
        let early_in = early.len() as u64;
        if s.websocket_handoff && early.is_empty() && self.hand_off(&client, &head, &mut ex, sticky)
        {
            self.record_handoff(&ex);
            return None;
        }
        let connected = self
            .pool
            .connect(&self.metrics, sticky, s.connect_timeout)
            .await;
        let mut worker = match connected {
            Ok((index, stream)) => {
                ex.worker = Some(index);
                stream
            }
            Err(refused) => {
                let failure = Failure::Unavailable(refused);
                let status = self.error(&mut client, &ex, &failure, s).await;
                self.record(&ex, status, 0, 0, Some(&failure));
                return None;
            }
        };

        let response = match worker.write_all(&head).await {
            Ok(()) => read_response(&mut worker, s.api_read_timeout).await,
            Err(e) => Err(Failure::io(e)),
        };
        let (response, after) = match response {
            Ok(parts) => parts,
            Err(failure) => {
                if let Some(kind) = failure.metric() {
                    self.metrics.upstream_error(kind);
                }
                let status = self.error(&mut client, &ex, &failure, s).await;
                self.record(&ex, status, early_in, 0, Some(&failure));
                return None;
            }
        };
        let status = response.status;
        if status != 101 {
            // The bytes the client sent ahead never reach the worker: the connection ends
            // with this answer.
            let head = client_head(&response, &ex, true);
            match relay_answer(&mut client, &mut worker, &head, &response, &after, s).await {
                Ok(out) => self.record(&ex, status, early_in, out, None),
                Err(e) => self.record(&ex, status, early_in, 0, Some(&e)),
            }
            return None;
        }
        let head = client_head(&response, &ex, false);
        let mut opened = reply::send(&mut client, &head, s.api_read_timeout).await;
        if opened.is_ok() && !after.is_empty() {
            opened = reply::send(&mut client, &after, s.api_read_timeout).await;
        }
        // Now the worker speaks WebSocket: what the client sent ahead is its first bytes.
        if opened.is_ok() && !early.is_empty() {
            opened = worker.write_all(&early).await;
        }
        if let Err(e) = opened {
            self.record(&ex, 101, early_in, 0, Some(&e));
            return None;
        }
        Some(Open {
            client,
            worker,
            ex,
            early_in,
            early_out: after.len() as u64,
        })
    }

    /// Relay an open tunnel to its end; counted in the tunnel gauge while it lasts, and
    /// logged once, at the end, with its lifetime as its duration.
    async fn relay(&self, mut open: Open, idle: Duration) {
        self.metrics.tunnel_opened();
        open.ex.start = Instant::now();
        let mut side = client_side(open.client);
        let client: &mut dyn Duplex = match &mut side {
            ClientSide::Plain(tcp) => tcp,
            ClientSide::Kept(stream) => stream,
        };
        let (moved, end) = relay::relay(client, &mut open.worker, idle).await;
        self.metrics.tunnel_closed();
        let error = match end {
            End::Closed => None,
            End::Idle => Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "tunnel idle timeout",
            )),
            End::Failed(e) => Some(e),
        };
        self.record(
            &open.ex,
            101,
            open.early_in + moved.client_to_worker,
            open.early_out + moved.worker_to_client,
            error.as_ref().map(|e| e as _),
        );
    }

    /// Give the client's connection to the worker for `sticky` (or the next healthy one)
    /// over its handoff channel, with the forwarded `head` and the gateway's response
    /// headers: `true` when the worker has it (the caller then drops its copy). Only a
    /// plain-TCP client can be handed over, and only to a worker this process
    /// supervises; a full queue or a failed send leaves the connection here, for the
    /// relay.
    fn hand_off(
        &self,
        client: &Stream,
        head: &[u8],
        ex: &mut Exchange,
        sticky: Option<usize>,
    ) -> bool {
        if ex.client.tls {
            return false;
        }
        let Some(fd) = plain_fd(client) else {
            return false;
        };
        let Some((index, _)) = self.pool.pick(sticky) else {
            return false;
        };
        let Some(sender) = self.pool.handoff(index) else {
            return false;
        };
        let headers = handoff_headers(ex);
        match sender.send(fd, head, &headers) {
            Ok(()) => {
                self.metrics.handoff("ok");
                ex.worker = Some(index);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.metrics.handoff("full");
                tracing::debug!(worker = index, "handoff queue full: relaying");
                false
            }
            Err(e) => {
                self.metrics.handoff("failed");
                tracing::warn!(worker = index, error = %e, "handoff failed: relaying");
                false
            }
        }
    }

    /// Answer with the gateway's JSON error for `failure` and close; the status written.
    async fn error(
        &self,
        client: &mut Stream,
        ex: &Exchange,
        failure: &Failure,
        s: &Settings,
    ) -> u16 {
        let out = reply::Out {
            request_id: &ex.request_id,
            close: true,
            head_only: false,
            send_timeout: s.body_timeout,
        };
        let status = failure.status();
        let written = reply::error(
            client,
            status,
            failure.code(),
            failure.message(),
            ex.client.tls,
            out,
        )
        .await;
        let _ = client.shutdown().await;
        match written {
            Ok(_) => status,
            Err(_) => 0,
        }
    }

    /// A handed-over upgrade's metrics and access-log line: the worker answers it, so the
    /// gateway has no status, duration or bytes of its own to report.
    fn record_handoff(&self, ex: &Exchange) {
        self.finished(ex, 0, 0, 0, true, None);
    }

    /// The request metrics and the access-log line, as the proxy's `logging` writes them.
    fn record(
        &self,
        ex: &Exchange,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
        error: Option<&dyn fmt::Display>,
    ) {
        self.finished(ex, status, bytes_in, bytes_out, false, error);
    }

    fn finished(
        &self,
        ex: &Exchange,
        status: u16,
        bytes_in: u64,
        bytes_out: u64,
        handoff: bool,
        error: Option<&dyn fmt::Display>,
    ) {
        Finished {
            method: &"GET",
            path: &ex.path,
            status,
            route: Route::Realtime,
            elapsed: ex.start.elapsed(),
            bytes_in: bytes_in as usize,
            bytes_out: bytes_out as usize,
            client: ex.client.peer,
            worker: ex.worker,
            handoff,
            request_id: &ex.request_id,
            tls: ex.client.tls,
            error,
        }
        .record(&self.metrics);
    }
}

/// What the relay needs of a client's side: one trait object for both kinds, so that
/// there is one relay future type, not one per kind.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// The client's side of a tunnel as the relay drives it.
enum ClientSide {
    /// A plain TCP connection as a bare tokio socket: no Pingora stream around it (its
    /// 1,460-byte write buffer, kept for the HTTP path where it saves a send per response,
    /// and ≈ 450 bytes of stream state and digests), for the tunnel's whole life.
    Plain(TcpStream),
    /// Pingora's stream, kept: TLS (its session state lives in the stream), or a plain
    /// socket whose descriptor could not be duplicated.
    Kept(Stream),
}

/// Unwrap a plain TCP client into a tokio socket over a duplicate of its descriptor, and
/// drop the Pingora stream. The caller flushed it.
fn client_side(client: Stream) -> ClientSide {
    let Some(fd) = plain_fd(&client) else {
        return ClientSide::Kept(client);
    };
    let Ok(tcp) = fd
        .try_clone_to_owned()
        .map(std::net::TcpStream::from)
        .and_then(TcpStream::from_std)
    else {
        return ClientSide::Kept(client);
    };
    drop(client);
    ClientSide::Plain(tcp)
}

/// The socket of a plain-TCP client (not TLS, not another kind of stream).
fn plain_fd(client: &Stream) -> Option<BorrowedFd<'_>> {
    let io: &dyn IO = &**client;
    let l4 = io.as_any().downcast_ref::<L4Stream>()?;
    // SAFETY: the descriptor belongs to `client`, which outlives the borrow.
    Some(unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) })
}

/// What the gateway adds to every response, as a header section for the worker's answer
/// to a handed-over upgrade: the security headers and the request id.
fn handoff_headers(ex: &Exchange) -> Vec<u8> {
    let mut out = respond::security_lines(ex.client.tls).to_vec();
    put_header(&mut out, b"x-request-id", ex.request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// A worker's answer to an upgrade, parsed: what the client gets of it.
struct Answer {
    status: u16,
    /// The head, less what the gateway sets itself, without its empty line.
    head: Vec<u8>,
    /// `Content-Length`, if it has one.
    length: Option<u64>,
}

/// Read the worker's response head within `timeout`: the head, and the bytes after it.
async fn read_response(
    worker: &mut TcpStream,
    timeout: Duration,
) -> Result<(Answer, Vec<u8>), Failure> {
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        loop {
            if let Some(parsed) = parse_response(&buf)? {
                return Ok(parsed);
            }
            if buf.len() >= btp_h1::limits::MAX_RESPONSE_HEAD_BYTES {
                return Err(Failure::Broken(Broken::Head));
            }
            buf.reserve(1024);
            let n = worker.read_buf(&mut buf).await.map_err(Failure::io)?;
            if n == 0 {
                return Err(Failure::io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

fn parse_response(buf: &[u8]) -> Result<Option<(Answer, Vec<u8>)>, Failure> {
    let mut fields = response::fields();
    let parsed =
        response::parse(buf, &mut fields, false).map_err(|_| Failure::Broken(Broken::Head))?;
    let Some(answer) = parsed else {
        return Ok(None);
    };
    let mut head = Vec::with_capacity(answer.len + 256);
    answer.write(&mut head, |name| {
        !(name.eq_ignore_ascii_case("x-request-id") || respond::is_security_header(name))
    });
    let length = match answer.framing {
        btp_h1::body::Framing::Length(n) => Some(n),
        btp_h1::body::Framing::Empty => Some(0),
        _ => None,
    };
    Ok(Some((
        Answer {
            status: answer.status,
            head,
            length,
        },
        buf[answer.len..].to_vec(),
    )))
}

/// The head the client gets: the worker's, with the gateway's headers, and `Connection:
/// close` when the connection ends after it.
fn client_head(answer: &Answer, ex: &Exchange, close: bool) -> Vec<u8> {
    let mut out = answer.head.clone();
    out.extend_from_slice(respond::security_lines(ex.client.tls));
    put_header(&mut out, b"x-request-id", ex.request_id.as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Relay a non-`101` answer (head, then its body) and close: the client never talks to
/// the worker on a connection the gateway did not route. Returns the body bytes sent.
async fn relay_answer<C, W>(
    client: &mut C,
    worker: &mut W,
    head: &[u8],
    answer: &Answer,
    after: &[u8],
    s: &Settings,
) -> io::Result<u64>
where
    C: AsyncWrite + Unpin + ?Sized,
    W: AsyncRead + Unpin + ?Sized,
{
    // No body, a sized one, or everything until the worker closes or goes quiet: the
    // connection closes after it either way.
    let limit = answer.length.unwrap_or(u64::MAX);
    let first = after
        .get(
            ..usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .min(after.len()),
        )
        .unwrap_or_default();
    let mut out = head.to_vec();
    out.extend_from_slice(first);
    reply::send(client, &out, s.body_timeout).await?;
    let mut sent = first.len() as u64;
    let rest = limit - sent;
    if rest > 0 {
        let mut body = (&mut *worker).take(rest);
        if let Ok(copied) =
            tokio::time::timeout(s.api_read_timeout, tokio::io::copy(&mut body, client)).await
        {
            sent += copied?;
        }
    }
    client.flush().await?;
    client.shutdown().await?;
    Ok(sent)
}
