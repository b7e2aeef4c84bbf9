//! A request forwarded to an API worker over HTTP/1.1, and its answer relayed back: the
//! `/api/` routes and Engine.IO long-polling, whatever their method or body.
//!
//! Measured before it was written (bench/README.md): Pingora's proxy pipeline spent
//! 104–113 µs of CPU per proxied request on the bench machine, nginx 36–47 µs, and a lean
//! path doing only what the job needs 37–39 µs. So every HTTP/1 request the edge reads is
//! forwarded here:
//!
//! - the head is rewritten once, as bytes: the client's connection headers and framing
//!   dropped ([`btp_h1::request::RequestHead::is_connection_header`]), the forwarding
//!   headers and request id decided by [`crate::forward`] as on every path, and the
//!   body framed by the gateway — `Content-Length`, or canonical chunks for a chunked
//!   body — so the worker reads exactly the boundaries the gateway read;
//! - a body of up to [`BUFFERED_BODY`] bytes is read whole first (within
//!   `body_timeout`) and goes out with the head in one send, on a kept-alive connection
//!   ([`crate::upstream::conns`]); if that connection turns out closed by the worker
//!   before any answer, the request goes once more on a new one. A larger or chunked
//!   body streams through, counted against `max_body_bytes` (413), within
//!   `body_timeout` (408);
//! - the answer's head is rewritten once (the gateway's security headers and request id)
//!   and goes out with the body's first bytes; the rest of the body is relayed as the
//!   worker framed it.
//!
//! Failures answer with the JSON error of [`crate::upstream::Failure`] and close.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use btp_h1::body::{put_chunk, Body, Framing, LAST_CHUNK};
use btp_h1::request::{BodyLength, RequestHead};
use btp_h1::{put_header, response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Settings;
use crate::forward::{self, Client, Forwarding};
use crate::respond;
use crate::serve::reply::{self, Out};
use crate::upstream::conns::{Conns, Upstream};
use crate::upstream::failure::Broken;
use crate::upstream::Failure;

/// A request body up to this size is read whole before the worker is asked, and sent
/// with the head in one write: a slow client then costs the worker nothing, and the
/// request can be sent again if its pooled connection turns out closed.
pub const BUFFERED_BODY: u64 = 64 * 1024;

/// Bytes read from the worker per read.
pub(crate) const BODY_CHUNK: usize = 16 * 1024;

/// What the connection does after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// A request to forward.
pub struct Request<'a, 'h, 'b> {
    pub head: &'a RequestHead<'h, 'b>,
    /// The target in origin form.
    pub path_and_query: &'a str,
    /// The target's authority, for a request in absolute form.
    pub authority: Option<&'a str>,
    pub client: Client,
    pub request_id: &'a str,
    pub sticky: Option<usize>,
    pub read_timeout: Duration,
    /// The client's connection closes after this answer (it asked, or the gateway is
    /// draining).
    pub close: bool,
}

/// What the access-log line needs of an exchange.
#[derive(Debug, Default)]
pub struct Outcome {
    pub worker: Option<usize>,
    /// 0 when no response head reached the client.
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub error: Option<String>,
}

/// Why the client's side of an exchange failed.
pub(crate) enum ClientFail {
    /// Answer with this error and close.
    Answer(u16, &'static str, &'static str),
    /// Nothing to answer (the client is gone): close.
    Gone(io::Error),
}

pub(crate) const BODY_LATE: ClientFail = ClientFail::Answer(
    408,
    "request_timeout",
    "the request body did not arrive in time",
);
pub(crate) const BODY_TOO_LARGE: ClientFail = ClientFail::Answer(
    413,
    "payload_too_large",
    "request body is larger than the gateway accepts",
);
pub(crate) const BODY_MALFORMED: ClientFail =
    ClientFail::Answer(400, "bad_request", "malformed chunked body");
/// An HTTP/2 body longer than its `Content-Length` (the HTTP/2 codec refuses it too).
pub(crate) const BODY_MISMATCH: ClientFail = ClientFail::Answer(
    400,
    "bad_request",
    "request body does not match its content-length",
);

pub struct Forwarder {
    conns: Arc<Conns>,
}

impl Forwarder {
    pub fn new(conns: Arc<Conns>) -> Forwarder {
        Forwarder { conns }
    }

    pub fn conns(&self) -> &Arc<Conns> {
        &self.conns
    }

    /// Forward `req` and relay the answer to `client`. `buf` holds what was read after
    /// the head: the body's start, then perhaps the next request, which is left there.
    /// `scratch`: a buffer the connection keeps for its exchanges.
    pub async fn exchange<C>(
        &self,
        client: &mut C,
        buf: &mut Vec<u8>,
        req: &Request<'_, '_, '_>,
        s: &Settings,
        scratch: &mut Vec<u8>,
        outcome: &mut Outcome,
    ) -> Next
    where
        C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let mut head = upstream_head(req);
        let started = Instant::now();
        let body_deadline = started + s.body_timeout;
        let streamed = match req.head.body {
            BodyLength::None => false,
            BodyLength::Length(n) if n <= BUFFERED_BODY => {
                let n = n as usize;
                let read =
                    read_at_least(client, buf, n, req.head.expect_continue, body_deadline, s).await;
                if let Err(fail) = read {
                    return self.client_failed(client, req, s, outcome, fail).await;
                }
                head.extend_from_slice(&buf[..n]);
                buf.drain(..n);
                outcome.bytes_in = n;
                false
            }
            BodyLength::Length(_) | BodyLength::Chunked => true,
        };

        let mut up = match self
            .conns
            .checkout(req.sticky, streamed, s.connect_timeout)
            .await
        {
            Ok(up) => up,
            Err(refused) => {
                return self
                    .failed(client, req, s, outcome, Failure::Unavailable(refused))
                    .await
            }
        };
        outcome.worker = Some(up.index);
        if streamed {
            if let Err(e) = timed(req.read_timeout, up.stream.write_all(&head)).await {
                return self.failed(client, req, s, outcome, Failure::io(e)).await;
            }
            match pump_body(client, buf, &mut up.stream, req, body_deadline, s).await {
                Ok(n) => outcome.bytes_in = n,
                Err(Pumped::Client(fail)) => {
                    // The worker has a request it will never see the end of; its
                    // connection goes with it.
                    return self.client_failed(client, req, s, outcome, fail).await;
                }
                Err(Pumped::Worker(failure)) => {
                    return self.failed(client, req, s, outcome, failure).await
                }
            }
        }

        let head_request = req.head.method == "HEAD";
        let sent = (!streamed).then_some(head.as_slice());
        let asked = self
            .ask(&mut up, sent, scratch, head_request, req.read_timeout, s)
            .await;
        outcome.worker = Some(up.index);
        let answer = match asked {
            Ok(len) => len,
            Err(failure) => return self.failed(client, req, s, outcome, failure).await,
        };
        let (next, reusable) = self
            .relay(client, &mut up.stream, scratch, answer, req, s, outcome)
            .await;
        if reusable {
            self.conns.check_in(up);
        }
        next
    }

    /// Send `whole` (the head and any body, or `None` when they went already) on `up` and
    /// read the answer's head into `scratch`: its length. A pooled connection the worker
    /// closed before it read anything gets the request once more, on a new connection
    /// (`up` is then that one).
    pub(crate) async fn ask(
        &self,
        up: &mut Upstream,
        whole: Option<&[u8]>,
        scratch: &mut Vec<u8>,
        head_request: bool,
        read_timeout: Duration,
        s: &Settings,
    ) -> Result<usize, Failure> {
        loop {
            match round_trip(&mut up.stream, whole, scratch, head_request, read_timeout).await {
                Ok(len) => return Ok(len),
                Err(Trip::Untouched(failure)) if up.reused && whole.is_some() => {
                    tracing::debug!(worker = up.index, error = %failure, "pooled connection closed: retrying");
                    self.conns
                        .reconnect(up, s.connect_timeout)
                        .await
                        .map_err(Failure::Unavailable)?;
                }
                Err(Trip::Untouched(failure) | Trip::Failed(failure)) => return Err(failure),
            }
        }
    }

    /// Relay the worker's answer, whose head ends at `head_len` in `scratch`; whether
    /// the worker's connection can carry another request.
    #[allow(clippy::too_many_arguments)]
    async fn relay<C>(
        &self,
        client: &mut C,
        worker: &mut TcpStream,
        scratch: &mut Vec<u8>,
        head_len: usize,
        req: &Request<'_, '_, '_>,
        s: &Settings,
        outcome: &mut Outcome,
    ) -> (Next, bool)
    where
        C: AsyncWrite + Unpin + ?Sized,
    {
        let head_request = req.head.method == "HEAD";
        let mut fields = response::fields();
        let Ok(Some(answer)) = response::parse(&scratch[..head_len], &mut fields, head_request)
        else {
            let next = self
                .failed(client, req, s, outcome, Failure::Broken(Broken::Head))
                .await;
            return (next, false);
        };
        let until_close = answer.framing == Framing::UntilClose;
        let close = req.close || until_close;
        let mut out = Vec::with_capacity(head_len + 640);
        answer.write(&mut out, passes_back);
        out.extend_from_slice(respond::security_lines(req.client.tls));
        put_header(&mut out, b"x-request-id", req.request_id.as_bytes());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        let status = answer.status;
        let mut reusable = answer.keep_alive;
        let mut body = Body::response(answer.framing);

        let first = match body.take(&scratch[head_len..]) {
            Ok(first) => first,
            Err(_) => {
                let next = self
                    .failed(client, req, s, outcome, Failure::Broken(Broken::Body))
                    .await;
                return (next, false);
            }
        };
        // Bytes past the body's end: the worker and the gateway disagree on framing.
        reusable &= first.len() == scratch.len() - head_len;
        out.extend_from_slice(first);
        let first_len = first.len();
        outcome.status = status;
        if let Err(e) = reply::send(client, &out, s.body_timeout).await {
            outcome.error = Some(format!("writing the response: {e}"));
            return (Next::Close, false);
        }
        outcome.bytes_out = first_len;

        while !body.is_done() {
            scratch.clear();
            scratch.reserve(BODY_CHUNK);
            let read = timed(req.read_timeout, worker.read_buf(&mut *scratch)).await;
            let failure = match read {
                Ok(0) if body.until_close() => {
                    reusable = false;
                    break;
                }
                Ok(0) => Failure::io(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => match body.take(scratch) {
                    Ok(chunk) => {
                        reusable &= chunk.len() == scratch.len();
                        let n = chunk.len();
                        if let Err(e) = reply::send(client, chunk, s.body_timeout).await {
                            outcome.error = Some(format!("writing the response: {e}"));
                            return (Next::Close, false);
                        }
                        outcome.bytes_out += n;
                        continue;
                    }
                    Err(_) => Failure::Broken(Broken::Body),
                },
                Err(e) => Failure::io(e),
            };
            // The head is out: all that is left is to cut the response short.
            if let Some(kind) = failure.metric() {
                self.conns.metrics().upstream_error(kind);
            }
            outcome.error = Some(failure.to_string());
            return (Next::Close, false);
        }
        let next = if close { Next::Close } else { Next::KeepAlive };
        (next, reusable)
    }

    /// The worker failed the request: its JSON error, and close.
    async fn failed<C>(
        &self,
        client: &mut C,
        req: &Request<'_, '_, '_>,
        s: &Settings,
        outcome: &mut Outcome,
        failure: Failure,
    ) -> Next
    where
        C: AsyncWrite + Unpin + ?Sized,
    {
        if let Some(kind) = failure.metric() {
            self.conns.metrics().upstream_error(kind);
        }
        outcome.error = Some(failure.to_string());
        self.answer(
            client,
            req,
            s,
            outcome,
            failure.status(),
            failure.code(),
            failure.message(),
        )
        .await
    }

    async fn client_failed<C>(
        &self,
        client: &mut C,
        req: &Request<'_, '_, '_>,
        s: &Settings,
        outcome: &mut Outcome,
        fail: ClientFail,
    ) -> Next
    where
        C: AsyncWrite + Unpin + ?Sized,
    {
        match fail {
            ClientFail::Answer(status, code, message) => {
                outcome.error = Some(message.to_string());
                self.answer(client, req, s, outcome, status, code, message)
                    .await
            }
            ClientFail::Gone(e) => {
                outcome.error = Some(format!("reading the request body: {e}"));
                Next::Close
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn answer<C>(
        &self,
        client: &mut C,
        req: &Request<'_, '_, '_>,
        s: &Settings,
        outcome: &mut Outcome,
        status: u16,
        code: &str,
        message: &str,
    ) -> Next
    where
        C: AsyncWrite + Unpin + ?Sized,
    {
        let out = Out {
            request_id: req.request_id,
            close: true,
            head_only: req.head.method == "HEAD",
            send_timeout: s.body_timeout,
        };
        if let Ok(sent) = reply::error(client, status, code, message, req.client.tls, out).await {
            outcome.status = status;
            outcome.bytes_out = sent;
        }
        Next::Close
    }
}

/// Whether a worker's response header goes to the client: not the worker's connection
/// management, and not what the gateway sets itself.
pub(crate) fn passes_back(name: &str) -> bool {
    !(forward::is_hop_by_hop(name)
        || name.eq_ignore_ascii_case("x-request-id")
        || respond::is_security_header(name))
}

/// The head the worker gets for a request, whichever protocol the client spoke.
pub(crate) struct Outgoing<'a> {
    pub method: &'a str,
    /// The target in origin form.
    pub path_and_query: &'a str,
    /// The request's authority (an absolute-form target, HTTP/2's `:authority`): the
    /// worker's `Host` when the client sent none.
    pub authority: Option<&'a str>,
    pub client: Client,
    pub request_id: &'a str,
    /// The gateway's framing of the body it sends.
    pub body: BodyLength,
}

impl<'a> Outgoing<'a> {
    /// The head, as bytes (pure): the request line, those of the client's message headers
    /// (`own`, its connection headers left out) that [`forward::passes`], `Host`, the
    /// forwarding headers decided from `incoming` (every header the client sent, by
    /// name), the request id and the framing.
    pub(crate) fn head(
        &self,
        own: impl Iterator<Item = (&'a str, &'a [u8])>,
        incoming: impl Fn(&str) -> Option<&'a [u8]>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        for part in [
            self.method.as_bytes(),
            b" ",
            self.path_and_query.as_bytes(),
            b" HTTP/1.1\r\n",
        ] {
            out.extend_from_slice(part);
        }
        let mut host = false;
        for (name, value) in own.filter(|(name, _)| forward::passes(name)) {
            host |= name.eq_ignore_ascii_case("host");
            put_header(&mut out, name.as_bytes(), value);
        }
        let authority = self.authority.map(str::as_bytes);
        if let (false, Some(authority)) = (host, authority) {
            put_header(&mut out, b"host", authority);
        }
        let forwarding = Forwarding::decide(self.client, incoming, authority);
        forwarding.put(&mut out);
        put_header(&mut out, b"x-request-id", self.request_id.as_bytes());
        match self.body {
            BodyLength::None => {}
            BodyLength::Length(n) => {
                put_header(&mut out, b"content-length", n.to_string().as_bytes())
            }
            BodyLength::Chunked => put_header(&mut out, b"transfer-encoding", b"chunked"),
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The head the worker gets for an HTTP/1 request (pure).
fn upstream_head(req: &Request<'_, '_, '_>) -> Vec<u8> {
    let head = req.head;
    let outgoing = Outgoing {
        method: head.method,
        path_and_query: req.path_and_query,
        authority: req.authority,
        client: req.client,
        request_id: req.request_id,
        body: head.body,
    };
    let own = head
        .headers
        .iter()
        .filter(|h| !head.is_connection_header(h.name))
        .map(|h| (h.name, h.value));
    outgoing.head(own, |name| head.header(name))
}

/// `fut` within `limit`, its timeout as an I/O error.
pub(crate) async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")),
    }
}

/// Read from the client until `buf` holds `n` bytes, by `deadline`. `continue_first`:
/// the client waits for `100 Continue` before it sends its body.
async fn read_at_least<C>(
    client: &mut C,
    buf: &mut Vec<u8>,
    n: usize,
    continue_first: bool,
    deadline: Instant,
    s: &Settings,
) -> Result<(), ClientFail>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    if buf.len() >= n {
        return Ok(());
    }
    if continue_first && buf.is_empty() {
        reply::send(client, b"HTTP/1.1 100 Continue\r\n\r\n", s.body_timeout)
            .await
            .map_err(ClientFail::Gone)?;
    }
    buf.reserve(n - buf.len());
    while buf.len() < n {
        match tokio::time::timeout_at(deadline.into(), client.read_buf(buf)).await {
            Err(_) => return Err(BODY_LATE),
            Ok(Ok(0)) => return Err(ClientFail::Gone(io::ErrorKind::UnexpectedEof.into())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(ClientFail::Gone(e)),
        }
    }
    Ok(())
}

/// Why streaming a body stopped.
pub(crate) enum Pumped {
    Client(ClientFail),
    Worker(Failure),
}

/// Stream the request body from the client (the start of it in `buf`) to the worker,
/// framed as the head said; what follows the body stays in `buf`. The body bytes read.
async fn pump_body<C>(
    client: &mut C,
    buf: &mut Vec<u8>,
    worker: &mut TcpStream,
    req: &Request<'_, '_, '_>,
    deadline: Instant,
    s: &Settings,
) -> Result<usize, Pumped>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let framing = match req.head.body {
        BodyLength::None => return Ok(0),
        BodyLength::Length(n) => Framing::Length(n),
        BodyLength::Chunked => Framing::Chunked,
    };
    if req.head.expect_continue && buf.is_empty() {
        reply::send(client, b"HTTP/1.1 100 Continue\r\n\r\n", s.body_timeout)
            .await
            .map_err(|e| Pumped::Client(ClientFail::Gone(e)))?;
    }
    let chunked = framing == Framing::Chunked;
    let mut body = Body::request(framing);
    let (mut read, mut out) = (0usize, Vec::with_capacity(BODY_CHUNK + 16));
    loop {
        if !buf.is_empty() {
            out.clear();
            let fed = body
                .feed(buf, |data| {
                    read += data.len();
                    if chunked {
                        put_chunk(&mut out, data);
                    } else {
                        out.extend_from_slice(data);
                    }
                })
                .map_err(|_| Pumped::Client(BODY_MALFORMED))?;
            buf.drain(..fed.used);
            if read as u64 > s.max_body_bytes {
                return Err(Pumped::Client(BODY_TOO_LARGE));
            }
            if fed.done && chunked {
                out.extend_from_slice(LAST_CHUNK);
            }
            if !out.is_empty() {
                timed(req.read_timeout, worker.write_all(&out))
                    .await
                    .map_err(|e| Pumped::Worker(Failure::io(e)))?;
            }
            if fed.done {
                return Ok(read);
            }
        }
        buf.reserve(BODY_CHUNK);
        match tokio::time::timeout_at(deadline.into(), client.read_buf(buf)).await {
            Err(_) => return Err(Pumped::Client(BODY_LATE)),
            Ok(Ok(0)) => {
                return Err(Pumped::Client(ClientFail::Gone(
                    io::ErrorKind::UnexpectedEof.into(),
                )))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Pumped::Client(ClientFail::Gone(e))),
        }
    }
}

/// Why a round trip failed.
enum Trip {
    /// Before a byte of an answer arrived (the request may not have been read at all).
    Untouched(Failure),
    Failed(Failure),
}

/// Send `head` (unless it went already) on `stream` and read the answer's head into
/// `buf` (cleared first) within `timeout`: the head's length.
async fn round_trip(
    stream: &mut TcpStream,
    head: Option<&[u8]>,
    buf: &mut Vec<u8>,
    head_request: bool,
    timeout: Duration,
) -> Result<usize, Trip> {
    buf.clear();
    if buf.capacity() < 4096 {
        buf.reserve(4096);
    }
    let exchange = async {
        if let Some(head) = head {
            stream
                .write_all(head)
                .await
                .map_err(|e| Trip::Untouched(Failure::io(e)))?;
        }
        loop {
            let untouched = buf.is_empty();
            let n = stream
                .read_buf(&mut *buf)
                .await
                .map_err(|e| match untouched {
                    true => Trip::Untouched(Failure::io(e)),
                    false => Trip::Failed(Failure::io(e)),
                })?;
            if n == 0 {
                let eof = Failure::io(io::ErrorKind::UnexpectedEof.into());
                return Err(match untouched {
                    true => Trip::Untouched(eof),
                    false => Trip::Failed(eof),
                });
            }
            let mut fields = response::fields();
            match response::parse(buf, &mut fields, head_request) {
                // Nothing the gateway forwards asks for an interim answer.
                Ok(Some(answer)) if answer.status < 200 => {
                    return Err(Trip::Failed(Failure::Broken(Broken::Head)))
                }
                Ok(Some(answer)) => return Ok(answer.len),
                Ok(None) => {}
                Err(_) => return Err(Trip::Failed(Failure::Broken(Broken::Head))),
            }
            if buf.len() >= btp_h1::limits::MAX_RESPONSE_HEAD_BYTES {
                return Err(Trip::Failed(Failure::Broken(Broken::Head)));
            }
            buf.reserve(2048);
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(Trip::Failed(Failure::Timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use btp_h1::request::{self, Parsed};

    fn upstream(head: &str, trusted: bool) -> String {
        let mut fields = request::fields();
        let Parsed::Head(parsed) = request::parse(head.as_bytes(), &mut fields, 16 * 1024) else {
            panic!("not a head: {head}");
        };
        let target = parsed.target;
        let req = Request {
            head: &parsed,
            path_and_query: target,
            authority: None,
            client: Client {
                peer: Some([10, 0, 0, 9].into()),
                trusted,
                tls: false,
            },
            request_id: "rid",
            sticky: None,
            read_timeout: Duration::from_secs(1),
            close: false,
        };
        String::from_utf8(upstream_head(&req)).unwrap_or_default()
    }

    #[test]
    fn the_worker_gets_the_forwarding_headers_and_the_gateways_framing_only() {
        let head = "POST /api/sync/push HTTP/1.1\r\nHost: btp.ma\r\nConnection: keep-alive, X-Hop\r\n\
                    X-Hop: 1\r\nX-Forwarded-For: 6.6.6.6\r\nx-REQUEST-id: spoof\r\nTransfer-Encoding: chunked\r\n\
                    Expect: 100-continue\r\nAuthorization: Bearer t\r\n\r\n";
        let sent = upstream(head, false);
        assert!(
            sent.starts_with("POST /api/sync/push HTTP/1.1\r\n"),
            "{sent}"
        );
        for kept in [
            "Host: btp.ma\r\n",
            "Authorization: Bearer t\r\n",
            "x-forwarded-for: 10.0.0.9\r\n",
            "x-forwarded-proto: http\r\n",
            "x-forwarded-host: btp.ma\r\n",
            "x-request-id: rid\r\n",
            "transfer-encoding: chunked\r\n",
        ] {
            assert!(sent.contains(kept), "{kept:?} missing from {sent}");
        }
        for dropped in [
            "X-Hop",
            "6.6.6.6",
            "spoof",
            "Connection",
            "Expect",
            "Transfer-Encoding: chunked",
        ] {
            assert!(!sent.contains(dropped), "{dropped:?} in {sent}");
        }
        let sized = upstream(
            "PATCH /api/projects/1 HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n",
            false,
        );
        assert!(
            sized.contains("content-length: 12\r\n") && !sized.contains("Content-Length"),
            "{sized}"
        );
        let trusted = upstream(
            "GET /api/x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
            true,
        );
        assert!(
            trusted.contains("x-forwarded-for: 1.2.3.4, 10.0.0.9\r\n"),
            "{trusted}"
        );
        // What goes out parses back whole, with the same framing.
        let mut fields = request::fields();
        let Parsed::Head(again) = request::parse(sent.as_bytes(), &mut fields, 16 * 1024) else {
            panic!("{sent}");
        };
        assert_eq!(again.body, BodyLength::Chunked);
        assert_eq!(again.len, sent.len());
    }
}
