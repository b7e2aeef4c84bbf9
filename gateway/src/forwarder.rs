//! Bodiless HTTP/1.1 `/api/` requests on the gateway's lean path, outside Pingora's proxy
//! pipeline (`gateway.api_fast_path`).
//!
//! Pingora runs each proxied request as a pipeline of futures talking through channels,
//! with about a hundred allocations, a connection pool that spawns a watcher task per
//! returned connection and a `getpeername` per reuse; on the 2-core bench machine that is
//! about four times nginx's user CPU per proxied request (34–47 µs against 8–12 µs), none
//! of it reachable from the `ProxyHttp` phases (bench/README.md). The edge
//! ([`crate::listener::Edge`]) reads each HTTP/1 request head itself anyway, so when
//! [`request`] finds one this path can take, [`Forwarder::exchange`] forwards it with the
//! least work the job needs:
//!
//! - the head is rewritten once, as bytes: hop-by-hop headers dropped, the forwarding
//!   headers and request id decided by [`crate::forward`] as on every other path;
//! - it is written in one send on a keep-alive connection to the worker, taken from this
//!   path's own pool (per worker, newest first, dropped when the worker's process is
//!   replaced or the connection is readable, i.e. closed by the worker);
//! - the response head is rewritten once (the gateway's security headers and request id,
//!   as `response_filter` sets them) and written with the body's first bytes in one send;
//!   the rest of the body is relayed as it comes, framed as the worker framed it.
//!
//! What this path takes: `GET`, `HEAD`, `OPTIONS` or `DELETE`, HTTP/1.1, an origin-form
//! target on the `/api/` route, one `Host`, no body (`Content-Length: 0` at most), no
//! `Transfer-Encoding`, `Expect` or upgrade, and not a request the proxy would redirect to
//! HTTPS. Anything else is Pingora's, from that request to the end of the connection, so
//! bodies, size limits and every unusual case keep the one implementation they have.
//!
//! Failures answer as the Pingora path does (the JSON shape, 503 for no reachable worker,
//! 502 for a broken answer, 504 for a late one) and close the connection, as
//! `fail_to_proxy` does. A request that finds its pooled connection closed by the worker
//! before any byte of an answer is sent again on a new connection: every method this path
//! takes is idempotent.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access::Finished;
use crate::config::Settings;
use crate::forward::{self, has_token, Client, Forwarding};
use crate::metrics::Metrics;
use crate::path;
use crate::respond;
use crate::route::{classify, Listener, Route};
use crate::tunnel::{io_error, write_head, Failure, MAX_HEAD, MAX_HEADERS};
use crate::upstream::{Pool, Refused};

/// Idle connections kept per worker; more are closed when returned.
const MAX_IDLE: usize = 256;

/// A pooled connection idle for longer is closed rather than reused (the proxy's pool
/// keeps its connections as long).
const IDLE_LIFETIME: Duration = Duration::from_secs(60);

/// Response body bytes read from the worker per read.
const BODY_CHUNK: usize = 16 * 1024;

/// A request this path takes, ready to forward.
pub struct ApiRequest {
    /// Length of its head in the bytes read; what follows is the client's next request.
    pub len: usize,
    method: Method,
    path: String,
    request_id: String,
    /// The head the worker gets.
    upstream: Vec<u8>,
    /// The client asked to close after this request.
    close: bool,
    client: Client,
}

/// The request in a complete head, if this path takes it (pure). `len` is the head's
/// length.
pub fn request(
    req: &httparse::Request<'_, '_>,
    len: usize,
    settings: &Settings,
    client: Client,
) -> Option<ApiRequest> {
    if !settings.api_fast_path || req.version != Some(1) {
        return None;
    }
    let method = match req.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "OPTIONS" => Method::OPTIONS,
        "DELETE" => Method::DELETE,
        _ => return None,
    };
    let target = req.path?;
    if !target.starts_with('/') {
        return None;
    }
    let raw_path = target.split_once('?').map_or(target, |(p, _)| p);
    let clean = path::decode(raw_path).ok()?;
    if classify(Listener::Public, clean.as_str()) != Route::Api {
        return None;
    }

    let (mut host, mut close) = (None, false);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            // Two hosts is ambiguous; Pingora decides what that is.
            if host.replace(h.value).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if h.value != b"0" {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            let tokens = std::str::from_utf8(h.value).ok()?;
            if has_token(tokens, "upgrade") {
                return None;
            }
            close |= has_token(tokens, "close");
        }
    }
    let host = std::str::from_utf8(host?).ok()?;
    // The proxy answers this one with its redirect.
    if !client.tls && settings.redirect_http && settings.https_location(host, target).is_some() {
        return None;
    }

    let incoming = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let request_id = forward::request_id(
        incoming("x-request-id").and_then(|v| std::str::from_utf8(v).ok()),
        client.trusted,
    );
    let forwarding = Forwarding::decide(client, incoming, None);

    let mut upstream = Vec::with_capacity(len + 256);
    for part in [
        method.as_str().as_bytes(),
        b" ",
        target.as_bytes(),
        b" HTTP/1.1\r\n",
    ] {
        upstream.extend_from_slice(part);
    }
    for h in req.headers.iter().filter(|h| forward::passes(h.name)) {
        put_header(&mut upstream, h.name.as_bytes(), h.value);
    }
    put_header(
        &mut upstream,
        b"x-forwarded-for",
        forwarding.for_chain.as_bytes(),
    );
    put_header(&mut upstream, b"x-forwarded-proto", forwarding.proto);
    if let Some(host) = forwarding.host {
        put_header(&mut upstream, b"x-forwarded-host", host);
    }
    put_header(&mut upstream, b"x-request-id", request_id.as_bytes());
    upstream.extend_from_slice(b"\r\n");

    Some(ApiRequest {
        len,
        method,
        path: raw_path.to_string(),
        request_id,
        upstream,
        close,
        client,
    })
}

fn put_header(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for part in [name, b": ", value, b"\r\n"] {
        buf.extend_from_slice(part);
    }
}

/// What the client's connection does after an exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Read the client's next request.
    KeepAlive,
    /// Close it (the client asked, the answer was cut, or the gateway is draining).
    Close,
}

/// A keep-alive connection to a worker, waiting in the pool.
struct Idle {
    stream: TcpStream,
    generation: u64,
    since: Instant,
}

/// A connection to a worker for one exchange.
struct Upstream {
    index: usize,
    stream: TcpStream,
    /// Taken from the pool (the worker may have closed it meanwhile).
    reused: bool,
}

/// What the access-log line and the metrics need of an exchange.
#[derive(Default)]
struct Outcome {
    worker: Option<usize>,
    /// 0 when no response head reached the client.
    status: u16,
    bytes_out: usize,
    error: Option<String>,
}

/// The fast path: the worker pool, its idle connections, the metrics.
pub struct Forwarder {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// Per worker, newest last.
    idle: Box<[Mutex<Vec<Idle>>]>,
}

impl Forwarder {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>) -> Forwarder {
        let idle = (0..pool.len()).map(|_| Mutex::new(Vec::new())).collect();
        Forwarder {
            pool,
            metrics,
            idle,
        }
    }

    /// Forward `req` and relay the answer to `client`; one access-log line and the request
    /// metrics, as the proxy's `logging` writes them. `draining`: the gateway is shutting
    /// down, so the answer says the connection closes after it, and it does. `buf`: a buffer the connection
    /// keeps for its exchanges.
    pub async fn exchange<C>(
        &self,
        client: &mut C,
        req: &ApiRequest,
        settings: &Settings,
        draining: bool,
        buf: &mut Vec<u8>,
    ) -> Next
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let start = Instant::now();
        let mut outcome = Outcome::default();
        let next = self
            .forward(client, req, settings, draining, &mut outcome, buf)
            .await;
        self.metrics.fast_path_request();
        Finished {
            method: &req.method,
            path: &req.path,
            status: outcome.status,
            route: Route::Api,
            elapsed: start.elapsed(),
            bytes_in: 0,
            bytes_out: outcome.bytes_out,
            client: req.client.peer,
            worker: outcome.worker,
            handoff: false,
            request_id: &req.request_id,
            tls: req.client.tls,
            error: outcome.error.as_ref().map(|e| e as &dyn fmt::Display),
        }
        .record(&self.metrics);
        next
    }

    async fn forward<C>(
        &self,
        client: &mut C,
        req: &ApiRequest,
        s: &Settings,
        draining: bool,
        outcome: &mut Outcome,
        buf: &mut Vec<u8>,
    ) -> Next
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let mut up = match self.checkout(s, None).await {
            Ok(up) => up,
            Err(refused) => return self.unavailable(client, req, outcome, refused).await,
        };
        outcome.worker = Some(up.index);
        let asked = Asked {
            head_request: req.method == Method::HEAD,
            request_id: &req.request_id,
            tls: req.client.tls,
            close: req.close || draining,
        };
        let answer = loop {
            let trip = round_trip(
                &mut up.stream,
                &req.upstream,
                buf,
                asked,
                s.api_read_timeout,
            )
            .await;
            let failure = match trip {
                Ok(answer) => break answer,
                // A pooled connection the worker closed before it read anything: the
                // request (idempotent, bodiless) goes once more on a new connection.
                Err(Trip::Untouched(failure)) if up.reused => {
                    tracing::debug!(worker = up.index, error = %failure, "pooled connection closed: retrying");
                    match self.checkout(s, Some(up.index)).await {
                        Ok(fresh) => {
                            up = fresh;
                            outcome.worker = Some(up.index);
                            continue;
                        }
                        Err(refused) => {
                            return self.unavailable(client, req, outcome, refused).await
                        }
                    }
                }
                Err(Trip::Untouched(failure) | Trip::Failed(failure)) => failure,
            };
            self.metrics.upstream_error(failure.kind());
            outcome.error = Some(failure.to_string());
            let (code, message) = failure.answer();
            return self
                .refuse(client, req, outcome, failure.status(), code, message)
                .await;
        };

        let mut body = BodyEnd::new(answer.framing);
        let (first, mut reusable) = match body.take(&buf[answer.head_len..]) {
            Ok(taken) => (taken, answer.reusable),
            Err(failure) => {
                self.metrics.upstream_error(failure.kind());
                outcome.error = Some(failure.to_string());
                let (code, message) = failure.answer();
                return self.refuse(client, req, outcome, 502, code, message).await;
            }
        };
        // Bytes past the body's end mean the worker and this path disagree on framing.
        let first_len = first.len();
        reusable &= first_len == buf.len() - answer.head_len;
        let close_after = answer.until_close() || asked.close;
        let mut out = answer.client_head;
        out.extend_from_slice(first);
        let written = within(s.api_read_timeout, async {
            client.write_all(&out).await?;
            client.flush().await
        })
        .await;
        outcome.status = answer.status;
        if let Err(e) = written {
            outcome.error = Some(format!("writing the response: {e}"));
            return Next::Close;
        }
        outcome.bytes_out = first_len;

        while !body.is_done() {
            buf.clear();
            buf.reserve(BODY_CHUNK);
            let read = within(s.api_read_timeout, up.stream.read_buf(&mut *buf)).await;
            let failure = match read {
                Ok(0) if body.until_close() => {
                    reusable = false;
                    break;
                }
                Ok(0) => Failure::Io(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => match body.take(buf) {
                    Ok(chunk) => {
                        reusable &= chunk.len() == buf.len();
                        let chunk_len = chunk.len();
                        let sent = within(s.api_read_timeout, async {
                            client.write_all(chunk).await?;
                            client.flush().await
                        })
                        .await;
                        if let Err(e) = sent {
                            outcome.error = Some(format!("writing the response: {e}"));
                            return Next::Close;
                        }
                        outcome.bytes_out += chunk_len;
                        continue;
                    }
                    Err(failure) => failure,
                },
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Failure::Timeout,
                Err(e) => Failure::Io(e),
            };
            // The head is out: all that is left is to cut the response short.
            self.metrics.upstream_error(failure.kind());
            outcome.error = Some(failure.to_string());
            return Next::Close;
        }

        if reusable {
            self.check_in(up);
        }
        if close_after {
            Next::Close
        } else {
            Next::KeepAlive
        }
    }

    /// A connection to a worker: a pooled one to the next healthy worker if there is one,
    /// else a new one. `fresh`: a new connection, to that worker first.
    async fn checkout(&self, s: &Settings, fresh: Option<usize>) -> Result<Upstream, Refused> {
        let sticky = match fresh {
            Some(index) => Some(index),
            None => {
                let (index, _) = self.pool.pick(None).ok_or(Refused::NoneHealthy)?;
                if let Some(stream) = self.take_idle(index) {
                    return Ok(Upstream {
                        index,
                        stream,
                        reused: true,
                    });
                }
                Some(index)
            }
        };
        let (index, stream) = self
            .pool
            .connect(&self.metrics, sticky, s.connect_timeout)
            .await?;
        Ok(Upstream {
            index,
            stream,
            reused: false,
        })
    }

    fn take_idle(&self, index: usize) -> Option<TcpStream> {
        let slot = self.idle.get(index)?;
        let generation = self.pool.generation(index);
        loop {
            // The lock is held for the pop only: a stale connection closes outside it.
            let idle = slot.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if idle.generation == generation
                && idle.since.elapsed() < IDLE_LIFETIME
                && quiet(&idle.stream)
            {
                return Some(idle.stream);
            }
        }
    }

    fn check_in(&self, up: Upstream) {
        let Some(slot) = self.idle.get(up.index) else {
            return;
        };
        let generation = self.pool.generation(up.index);
        let stale = {
            let mut idle = slot.lock().unwrap_or_else(PoisonError::into_inner);
            // The worker's process was replaced: its old connections go now, not one by
            // one as they come up.
            let stale = match idle.first() {
                Some(oldest) if oldest.generation != generation => {
                    let (current, stale) = std::mem::take(&mut *idle)
                        .into_iter()
                        .partition(|i| i.generation == generation);
                    *idle = current;
                    stale
                }
                _ => Vec::new(),
            };
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    stream: up.stream,
                    generation,
                    since: Instant::now(),
                });
            }
            stale
        };
        drop(stale);
    }

    /// No worker took the request: 503.
    async fn unavailable<C>(
        &self,
        client: &mut C,
        req: &ApiRequest,
        outcome: &mut Outcome,
        refused: Refused,
    ) -> Next
    where
        C: AsyncWrite + Unpin + ?Sized,
    {
        let message = refused.message();
        outcome.error = Some(message.into());
        self.refuse(client, req, outcome, 503, "upstream_unavailable", message)
            .await
    }

    /// Answer with the gateway's JSON error and close.
    async fn refuse<C>(
        &self,
        client: &mut C,
        req: &ApiRequest,
        outcome: &mut Outcome,
        status: u16,
        code: &str,
        message: &str,
    ) -> Next
    where
        C: AsyncWrite + Unpin + ?Sized,
    {
        let written = async {
            let reply =
                respond::final_error(status, code, message, req.client.tls, &req.request_id)
                    .map_err(|_| io_error("error reply"))?;
            let body: &[u8] = if req.method == Method::HEAD {
                &[]
            } else {
                &reply.body
            };
            write_head(client, &reply.header, body).await?;
            io::Result::Ok(body.len())
        };
        if let Ok(sent) = written.await {
            outcome.status = status;
            outcome.bytes_out = sent;
        }
        Next::Close
    }
}

/// Nothing to read on a pooled connection: the worker has not closed it (a closed one is
/// readable, its end of stream pending). Uses the readiness the runtime already has, so
/// the common case costs no system call.
fn quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// `fut` within `limit`, its timeout as an I/O error.
async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}

/// Why a round trip failed.
enum Trip {
    /// Before a byte of an answer arrived (the request may not have been read at all).
    Untouched(Failure),
    Failed(Failure),
}

/// Send `head` on `stream` and read the answer's head into `buf` (cleared first) within
/// `timeout`.
async fn round_trip(
    stream: &mut TcpStream,
    head: &[u8],
    buf: &mut Vec<u8>,
    asked: Asked<'_>,
    timeout: Duration,
) -> Result<Answer, Trip> {
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    let exchange = async {
        stream
            .write_all(head)
            .await
            .map_err(|e| Trip::Untouched(Failure::Io(e)))?;
        loop {
            let untouched = buf.is_empty();
            let n = stream
                .read_buf(&mut *buf)
                .await
                .map_err(|e| match untouched {
                    true => Trip::Untouched(Failure::Io(e)),
                    false => Trip::Failed(Failure::Io(e)),
                })?;
            if n == 0 {
                let eof = Failure::Io(io::ErrorKind::UnexpectedEof.into());
                return Err(match untouched {
                    true => Trip::Untouched(eof),
                    false => Trip::Failed(eof),
                });
            }
            if let Some(answer) = Answer::parse(buf, asked).map_err(Trip::Failed)? {
                return Ok(answer);
            }
            if buf.len() >= MAX_HEAD {
                return Err(Trip::Failed(Failure::Malformed));
            }
            buf.reserve(2048);
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(Trip::Failed(Failure::Timeout)),
    }
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Whatever comes until the worker closes.
    UntilClose,
}

/// A worker's response head, parsed.
#[derive(Debug)]
struct Answer {
    status: u16,
    head_len: usize,
    framing: Framing,
    /// The worker keeps the connection open after this answer.
    reusable: bool,
    /// The head the client gets: the worker's, less its hop-by-hop headers, with the
    /// gateway's security headers and the request id.
    client_head: Vec<u8>,
}

/// What a response head needs from its request.
#[derive(Clone, Copy)]
struct Asked<'a> {
    head_request: bool,
    request_id: &'a str,
    tls: bool,
    /// The client's connection closes after this answer whatever the worker says: the
    /// client asked, or the gateway is shutting down (the client must know, or it would
    /// send its next request on a connection about to close).
    close: bool,
}

impl Answer {
    /// The head in `buf`, once it is whole (pure).
    fn parse(buf: &[u8], asked: Asked<'_>) -> Result<Option<Answer>, Failure> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Failure::Malformed),
        };
        let status = resp.code.ok_or(Failure::Malformed)?;
        // Nothing this path sends asks for an interim answer.
        if status < 200 {
            return Err(Failure::Malformed);
        }
        let mut reusable = resp.version == Some(1);
        let (mut length, mut chunked, mut coded) = (None, false, false);
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(Failure::Malformed)?;
                if length.replace(n).is_some_and(|m| m != n) {
                    return Err(Failure::Malformed);
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                coded = true;
                chunked = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.rsplit(',').next())
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                // A value that is not text is not one to keep a connection on.
                let tokens = std::str::from_utf8(h.value).unwrap_or("close");
                reusable &= !has_token(tokens, "close");
            }
        }
        let framing = if asked.head_request || status == 204 || status == 304 {
            Framing::Empty
        } else if coded {
            // Both codings and a length: the coding wins, and the connection is not
            // trusted with another request (RFC 9112 §6.3).
            if length.is_some() {
                reusable = false;
            }
            if chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            match length {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        // A body that ends with the worker's close ends the client's connection too.
        let close_client = framing == Framing::UntilClose;

        let mut client_head = Vec::with_capacity(head_len + 640);
        client_head.extend_from_slice(b"HTTP/1.1 ");
        // httparse reads exactly three digits.
        client_head.extend_from_slice(&[
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
            b' ',
        ]);
        client_head.extend_from_slice(resp.reason.unwrap_or_default().as_bytes());
        client_head.extend_from_slice(b"\r\n");
        for h in resp.headers.iter().filter(|h| passes_back(h.name)) {
            put_header(&mut client_head, h.name.as_bytes(), h.value);
        }
        client_head.extend_from_slice(respond::security_lines(asked.tls));
        put_header(
            &mut client_head,
            b"x-request-id",
            asked.request_id.as_bytes(),
        );
        if close_client || asked.close {
            client_head.extend_from_slice(b"connection: close\r\n");
        }
        client_head.extend_from_slice(b"\r\n");

        Ok(Some(Answer {
            status,
            head_len,
            framing,
            reusable: reusable && !close_client,
            client_head,
        }))
    }

    /// The body ends when the worker closes, and so does the client's connection.
    fn until_close(&self) -> bool {
        self.framing == Framing::UntilClose
    }
}

/// Whether a worker's response header goes to the client: not the worker's connection
/// management, and not what the gateway sets itself.
fn passes_back(name: &str) -> bool {
    !(forward::is_hop_by_hop(name)
        || name.eq_ignore_ascii_case("x-request-id")
        || respond::is_security_header(name))
}

/// Where a response body ends, found as its bytes go by (they are relayed unchanged).
#[derive(Debug)]
struct BodyEnd {
    state: BodyState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    UntilClose,
    Chunked(Chunk),
    Done,
}

/// Where a chunked body is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: the size so far, its digits, whether an extension began, and
    /// the line's length so far.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
        line: usize,
    },
    /// The size line's CR was read.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// In the trailer section, `line` bytes into a line.
    Trailer {
        line: usize,
    },
    TrailerLf {
        line: usize,
    },
}

/// The longest chunk-size or trailer line.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunk {
    const START: Chunk = Chunk::Size {
        size: 0,
        digits: 0,
        ext: false,
        line: 0,
    };
}

impl BodyEnd {
    fn new(framing: Framing) -> BodyEnd {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::UntilClose => BodyState::UntilClose,
            Framing::Chunked => BodyState::Chunked(Chunk::START),
        };
        BodyEnd { state }
    }

    fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    fn until_close(&self) -> bool {
        self.state == BodyState::UntilClose
    }

    /// The part of `bytes` that belongs to the body (all of it, unless the body ends
    /// inside it).
    fn take<'b>(&mut self, bytes: &'b [u8]) -> Result<&'b [u8], Failure> {
        let n = match &mut self.state {
            BodyState::Done => 0,
            BodyState::UntilClose => bytes.len(),
            BodyState::Length(rest) => {
                let n = usize::try_from(*rest)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                *rest -= n as u64;
                if *rest == 0 {
                    self.state = BodyState::Done;
                }
                n
            }
            BodyState::Chunked(chunk) => {
                let (n, done) = chunk_scan(chunk, bytes)?;
                if done {
                    self.state = BodyState::Done;
                }
                n
            }
        };
        Ok(&bytes[..n])
    }
}

/// Advance `chunk` over `bytes`: how many belong to the body, and whether it ended.
fn chunk_scan(chunk: &mut Chunk, bytes: &[u8]) -> Result<(usize, bool), Failure> {
    let mut i = 0;
    while i < bytes.len() {
        if let Chunk::Data(rest) = chunk {
            let n = usize::try_from(*rest)
                .unwrap_or(usize::MAX)
                .min(bytes.len() - i);
            i += n;
            *rest -= n as u64;
            if *rest == 0 {
                *chunk = Chunk::DataCr;
            }
            continue;
        }
        let b = bytes[i];
        i += 1;
        *chunk = match (*chunk, b) {
            (Chunk::Size { line, .. }, _) if line >= MAX_CHUNK_LINE => {
                return Err(Failure::Malformed)
            }
            (
                Chunk::Size {
                    size,
                    digits,
                    ext: false,
                    line,
                },
                _,
            ) if b.is_ascii_hexdigit() => {
                if digits >= 16 {
                    return Err(Failure::Malformed);
                }
                let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                Chunk::Size {
                    size: size << 4 | digit,
                    digits: digits + 1,
                    ext: false,
                    line: line + 1,
                }
            }
            (Chunk::Size { size, digits, .. }, b'\r') if digits > 0 => Chunk::SizeLf { size },
            (
                Chunk::Size {
                    size, digits, line, ..
                },
                b';' | b' ' | b'\t',
            ) if digits > 0 => Chunk::Size {
                size,
                digits,
                ext: true,
                line: line + 1,
            },
            (
                Chunk::Size {
                    size,
                    digits,
                    ext: true,
                    line,
                },
                _,
            ) if b != b'\n' => Chunk::Size {
                size,
                digits,
                ext: true,
                line: line + 1,
            },
            (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::Trailer { line: 0 },
            (Chunk::SizeLf { size }, b'\n') => Chunk::Data(size),
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::START,
            (Chunk::Trailer { line }, b'\r') => Chunk::TrailerLf { line },
            (Chunk::TrailerLf { line: 0 }, b'\n') => return Ok((i, true)),
            (Chunk::TrailerLf { .. }, b'\n') => Chunk::Trailer { line: 0 },
            (Chunk::Trailer { line }, _) if b != b'\n' && line < MAX_CHUNK_LINE => {
                Chunk::Trailer { line: line + 1 }
            }
            _ => return Err(Failure::Malformed),
        };
    }
    Ok((i, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(configure: impl FnOnce(&mut btp_config::Config)) -> Settings {
        let mut c = btp_config::Config::default();
        configure(&mut c);
        Settings::from_config(&c).unwrap_or_else(|e| panic!("{e}"))
    }

    fn client(trusted: bool) -> Client {
        Client {
            peer: Some(std::net::IpAddr::from([10, 0, 0, 7])),
            trusted,
            tls: false,
        }
    }

    /// The request in `head`, as [`request`] sees it.
    fn taken(head: &str, s: &Settings, client: Client) -> Option<ApiRequest> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(head.as_bytes()) {
            Ok(httparse::Status::Complete(len)) => request(&req, len, s, client),
            other => panic!("not a whole head: {other:?}"),
        }
    }

    fn get(target: &str, extra: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: btp.example.ma\r\n{extra}\r\n")
    }

    #[test]
    fn only_bodiless_http11_api_requests_are_taken() {
        let s = settings(|_| {});
        let take = |head: &str| taken(head, &s, client(false)).is_some();
        assert!(take(&get("/api/health", "")));
        assert!(take(&get("/api/projects?since=3", "Content-Length: 0\r\n")));
        assert!(take(
            &get("/api/projects/7", "").replacen("GET", "DELETE", 1)
        ));
        assert!(take(&get("/api/health", "").replacen("GET", "HEAD", 1)));
        assert!(take(&get("/api/health", "").replacen("GET", "OPTIONS", 1)));

        assert!(!take(&get("/api/sync", "").replacen("GET", "POST", 1)));
        assert!(!take(&get("/api/x", "Content-Length: 5\r\n")));
        assert!(!take(&get("/api/x", "Transfer-Encoding: chunked\r\n")));
        assert!(!take(&get("/api/x", "Expect: 100-continue\r\n")));
        assert!(!take(&get("/api/x", "Upgrade: h2c\r\n")));
        assert!(!take(&get("/api/x", "Connection: keep-alive, Upgrade\r\n")));
        assert!(!take(&get("/api/x", "Host: other\r\n")));
        assert!(!take(&get("/api/x", "").replace("HTTP/1.1", "HTTP/1.0")));
        assert!(!take("GET /api/x HTTP/1.1\r\n\r\n"));
        assert!(!take(&get("http://btp.example.ma/api/x", "")));
        assert!(!take(&get("/index.html", "")));
        assert!(!take(&get("/socket.io/?EIO=4&transport=polling", "")));
        assert!(!take(&get("/api/../index.html", "")));
        assert!(!take(&get("/api/%2e%2e/x", "")));

        let off = settings(|c| c.gateway.api_fast_path = false);
        assert!(taken(&get("/api/health", ""), &off, client(false)).is_none());
    }

    #[test]
    fn a_request_the_proxy_would_redirect_to_https_is_left_to_it() {
        let s = settings(|c| {
            c.gateway.tls_listen = Some("127.0.0.1:8443".into());
            c.gateway.redirect_http = true;
        });
        assert!(taken(&get("/api/health", ""), &s, client(false)).is_none());
        let tls = Client {
            tls: true,
            ..client(false)
        };
        assert!(taken(&get("/api/health", ""), &s, tls).is_some());
    }

    #[test]
    fn the_worker_gets_the_forwarding_headers_and_no_hop_by_hop_ones() {
        let s = settings(|_| {});
        let head = get(
            "/api/projects?x=1",
            "Connection: close\r\nKeep-Alive: 5\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Request-Id: mine\r\nAccept: application/json\r\n",
        );
        let req = taken(&head, &s, client(false)).unwrap_or_else(|| panic!("not taken"));
        let up = String::from_utf8_lossy(&req.upstream).to_string();
        assert!(up.starts_with("GET /api/projects?x=1 HTTP/1.1\r\nHost: btp.example.ma\r\n"));
        assert!(up.ends_with("\r\n\r\n"));
        assert!(up.contains("Accept: application/json\r\n"));
        assert!(up.contains("x-forwarded-for: 10.0.0.7\r\n"));
        assert!(up.contains("x-forwarded-proto: http\r\n"));
        assert!(up.contains("x-forwarded-host: btp.example.ma\r\n"));
        assert!(up.contains(&format!("x-request-id: {}\r\n", req.request_id)));
        assert_ne!(req.request_id, "mine");
        for gone in [
            "Connection",
            "Keep-Alive",
            "X-Forwarded-For: 6",
            "X-Real-IP",
            "X-Request-Id: mine",
        ] {
            assert!(!up.contains(gone), "{gone} was forwarded:\n{up}");
        }
        assert!(req.close);
        assert_eq!(req.path, "/api/projects");
        assert_eq!(req.len, head.len());

        // A trusted proxy's chain and request id are kept.
        let head = get(
            "/api/x",
            "X-Forwarded-For: 1.2.3.4\r\nX-Request-Id: req-9\r\n",
        );
        let req = taken(&head, &s, client(true)).unwrap_or_else(|| panic!("not taken"));
        let up = String::from_utf8_lossy(&req.upstream).to_string();
        assert!(up.contains("x-forwarded-for: 1.2.3.4, 10.0.0.7\r\n"));
        assert_eq!(req.request_id, "req-9");
        assert!(!req.close);
    }

    fn asked(head_request: bool) -> Asked<'static> {
        Asked {
            head_request,
            request_id: "rid",
            tls: true,
            close: false,
        }
    }

    fn answer(head: &str, head_request: bool) -> Result<Option<Answer>, Failure> {
        Answer::parse(head.as_bytes(), asked(head_request))
    }

    #[test]
    fn the_answer_head_is_framed_and_rewritten() {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\nconnection: keep-alive\r\nx-frame-options: ALLOW\r\nx-request-id: theirs\r\n\r\n";
        let a = answer(head, false)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no answer"));
        assert_eq!((a.status, a.head_len), (200, head.len()));
        assert_eq!(a.framing, Framing::Length(12));
        assert!(a.reusable && !a.until_close());
        let out = String::from_utf8_lossy(&a.client_head).to_string();
        assert!(out.starts_with(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n"
        ));
        assert!(out.contains("x-frame-options: DENY\r\n"));
        assert!(out.contains("strict-transport-security: "));
        assert!(out.ends_with("x-request-id: rid\r\n\r\n"));
        for gone in ["keep-alive", "ALLOW", "theirs"] {
            assert!(!out.contains(gone), "{gone} went to the client:\n{out}");
        }

        // Closing (the client asked, or the gateway is draining): the client is told.
        let closing = Asked {
            close: true,
            ..asked(false)
        };
        let a = Answer::parse(head.as_bytes(), closing)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no answer"));
        let out = String::from_utf8_lossy(&a.client_head).to_string();
        assert!(
            out.ends_with("x-request-id: rid\r\nconnection: close\r\n\r\n"),
            "{out}"
        );
        assert!(a.reusable, "the worker's connection is still good");

        let partial = answer("HTTP/1.1 200 OK\r\ncontent-length: 1\r\n", false);
        assert!(matches!(partial, Ok(None)));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |head: &str, head_request: bool| {
            answer(head, head_request)
                .ok()
                .flatten()
                .map(|a| (a.framing, a.reusable, a.until_close()))
        };
        let sized = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(framing(sized, true), Some((Framing::Empty, true, false)));
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\n\r\n", false),
            Some((Framing::Empty, true, false))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                false
            ),
            Some((Framing::Chunked, true, false))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                false
            ),
            Some((Framing::Chunked, false, false))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\n\r\n", false),
            Some((Framing::UntilClose, false, true))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nConnection: close\r\n\r\n",
                false
            ),
            Some((Framing::Length(3), false, false))
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\n", false),
            Some((Framing::Length(3), false, false))
        );
        for broken in [
            "HTTP/1.1 100 Continue\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(answer(broken, false).is_err(), "{broken:?} was accepted");
        }
    }

    /// Feed `body` in pieces of `step` bytes; the bytes taken and whether the end was found.
    fn scan(framing: Framing, body: &[u8], step: usize) -> Result<(Vec<u8>, bool), Failure> {
        let mut end = BodyEnd::new(framing);
        let mut taken = Vec::new();
        for piece in body.chunks(step) {
            if end.is_done() {
                break;
            }
            taken.extend_from_slice(end.take(piece)?);
        }
        Ok((taken, end.is_done()))
    }

    #[test]
    fn a_chunked_body_ends_where_its_last_chunk_and_trailers_end_in_any_split() {
        let body = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut with_next = body.to_vec();
        with_next.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for step in [1, 2, 3, 7, body.len()] {
            let (taken, done) =
                scan(Framing::Chunked, &with_next, step).unwrap_or_else(|e| panic!("{e}"));
            assert!(done, "step {step}");
            assert_eq!(taken, body, "step {step}");
        }
        let (taken, done) =
            scan(Framing::Chunked, b"0\r\n\r\n", 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(done);
        assert_eq!(taken, b"0\r\n\r\n");
        let (_, done) = scan(Framing::Chunked, b"5\r\nhel", 2).unwrap_or_else(|e| panic!("{e}"));
        assert!(!done);
    }

    #[test]
    fn a_malformed_chunked_body_is_refused() {
        let too_long = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        for broken in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\r\nhelloX\r\n",
            b"5\nhello\r\n",
            b"11111111111111111\r\n",
            b";ext\r\n",
            b"0\r\nbad\ntrailer\r\n\r\n",
            too_long.as_bytes(),
        ] {
            assert!(
                scan(Framing::Chunked, broken, 1).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(broken)
            );
        }
    }

    #[test]
    fn a_sized_body_ends_at_its_length_and_an_unsized_one_never() {
        let (taken, done) =
            scan(Framing::Length(5), b"helloHTTP", 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((taken.as_slice(), done), (&b"hello"[..], true));
        let (taken, done) =
            scan(Framing::UntilClose, b"hello", 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((taken.as_slice(), done), (&b"hello"[..], false));
        assert!(BodyEnd::new(Framing::Empty).is_done());
        assert!(BodyEnd::new(Framing::Length(0)).is_done());
    }

    /// One of `pieces`, at random.
    fn pick<'p>(rng: &mut rand::rngs::StdRng, pieces: &[&'p [u8]]) -> &'p [u8] {
        use rand::Rng;
        pieces[rng.random_range(0..pieces.len())]
    }

    /// A well-formed chunked body with a random shape.
    fn chunked_body(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
        use rand::Rng;
        let mut body = Vec::new();
        for _ in 0..rng.random_range(0..4) {
            let size = rng.random_range(1..20usize);
            body.extend_from_slice(format!("{size:x}").as_bytes());
            body.extend_from_slice(pick(rng, &[b"", b";a=b", b" ;x"]));
            body.extend_from_slice(b"\r\n");
            body.extend(std::iter::repeat_n(b'z', size));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n");
        body.extend_from_slice(pick(rng, &[b"", b"x-sum: 1\r\n", b"a: b\r\nc: d\r\n"]));
        body.extend_from_slice(b"\r\n");
        body
    }

    /// A request head with a random shape: mostly valid, often for the fast path.
    fn request_head(rng: &mut rand::rngs::StdRng) -> Vec<u8> {
        use rand::Rng;
        let mut head = pick(rng, &[b"GET ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"POST "]).to_vec();
        head.extend_from_slice(pick(
            rng,
            &[b"/api/", b"/api/", b"/api/", b"/x", b"/socket.io/"],
        ));
        for _ in 0..rng.random_range(0..3) {
            head.extend_from_slice(pick(
                rng,
                &[b"x", b"%2e", b"..", b"/", b"?a=b", b"%2f", b"y/"],
            ));
        }
        head.extend_from_slice(pick(
            rng,
            &[b" HTTP/1.1\r\n", b" HTTP/1.1\r\n", b" HTTP/1.0\r\n"],
        ));
        if rng.random_bool(0.8) {
            head.extend_from_slice(b"Host: a\r\n");
        }
        for _ in 0..rng.random_range(0..4) {
            head.extend_from_slice(pick(
                rng,
                &[
                    b"Host: b\r\n",
                    b"Content-Length: 0\r\n",
                    b"Content-Length: 5\r\n",
                    b"Connection: close, upgrade\r\n",
                    b"Connection: keep-alive\r\n",
                    b"X-Forwarded-For: 1.2.3.4\r\n",
                    b"x-request-id: r\r\n",
                    b"Accept: */*\r\n",
                ],
            ));
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    /// `bytes` with one random byte replaced, half the time.
    fn maybe_damaged(rng: &mut rand::rngs::StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
        use rand::Rng;
        if !bytes.is_empty() && rng.random() {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = pick(rng, &[b"\r", b"\n", b";", b"g", b"0", b"\xff", b"\0", b" "])[0];
        }
        bytes
    }

    #[test]
    fn random_and_damaged_inputs_never_panic_a_parser_and_a_body_never_takes_more_than_given() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_b7b0);
        let s = settings(|_| {});
        // How often the inputs reached the parsers' accepting states: inputs that never do
        // would test nothing past their first bytes.
        let (mut answers, mut ended, mut requests) = (0, 0, 0);
        for _ in 0..20_000 {
            let mut answer =
                pick(&mut rng, &[b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 204 x\r\n"]).to_vec();
            for _ in 0..rng.random_range(0..4) {
                answer.extend_from_slice(pick(
                    &mut rng,
                    &[
                        b"content-length: 3\r\n",
                        b"content-length: x\r\n",
                        b"transfer-encoding: chunked\r\n",
                        b"connection: close\r\n",
                        b"x: y\r\n",
                    ],
                ));
            }
            answer.extend_from_slice(b"\r\n");
            let answer = maybe_damaged(&mut rng, answer);
            if matches!(Answer::parse(&answer, asked(rng.random())), Ok(Some(_))) {
                answers += 1;
            }

            let body = chunked_body(&mut rng);
            let whole = body.len();
            let mut bytes = maybe_damaged(&mut rng, body);
            bytes.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            for framing in [Framing::Chunked, Framing::Length(7), Framing::UntilClose] {
                let mut end = BodyEnd::new(framing);
                let mut taken_all = 0;
                for piece in bytes.chunks(rng.random_range(1..9)) {
                    let Ok(taken) = end.take(piece) else { break };
                    assert!(taken.len() <= piece.len());
                    // A body that stops inside a piece has ended there.
                    assert!(taken.len() == piece.len() || end.is_done(), "{framing:?}");
                    taken_all += taken.len();
                    if end.is_done() {
                        break;
                    }
                }
                if framing == Framing::Chunked && end.is_done() {
                    ended += 1;
                    assert!(
                        taken_all <= whole,
                        "a chunked body ran into what follows it"
                    );
                }
            }

            let head = request_head(&mut rng);
            let head = maybe_damaged(&mut rng, head);
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            if let Ok(httparse::Status::Complete(len)) = req.parse(&head) {
                if let Some(taken) = request(&req, len, &s, client(rng.random())) {
                    requests += 1;
                    // What the worker gets parses back whole, one line per header.
                    let mut h = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut parsed = httparse::Request::new(&mut h);
                    let whole = parsed.parse(&taken.upstream);
                    assert!(
                        matches!(whole, Ok(httparse::Status::Complete(n)) if n == taken.upstream.len())
                    );
                    assert!(parsed
                        .headers
                        .iter()
                        .all(|h| !h.name.eq_ignore_ascii_case("connection")));
                }
            }
        }
        assert!(
            answers > 1000 && ended > 1000 && requests > 1000,
            "{answers} {ended} {requests}"
        );
    }
}
