//! WebSocket upgrades on the public port, outside Pingora's HTTP session.
//!
//! A Pingora HTTP/1 proxy session kept alive for a tunnel's whole life costs ≈ 73 KiB per
//! connection (buffers, the boxed proxy future, pipes, timers; bench/README.md), and every
//! frame goes through its per-chunk pipeline. Realtime clients hold a WebSocket open for
//! hours, so [`crate::listener::Edge`] reads the first request head of each HTTP/1
//! connection itself and, when [`parse_head`] finds a WebSocket upgrade on the realtime
//! route that the gateway would only proxy, hands the connection to [`Tunnels::serve`]:
//! pick the worker as the proxy does and add the same forwarding headers
//! ([`crate::forward`]). Then, when the worker is a process this gateway supervises and
//! the client is plain TCP, give it the client's socket itself with the head
//! (`btp_handoff`, `gateway.websocket_handoff`): the worker answers with the gateway's
//! headers and owns the connection, and nothing of it stays here. Otherwise forward the
//! head, relay the worker's answer with the gateway's headers, then, on a `101`, relay
//! bytes ([`crate::relay`]) under the heartbeat-derived idle limit. Anything else
//! (another route or method, a body, a redirect to HTTPS, a malformed head) goes to
//! Pingora unchanged.
//!
//! Graceful shutdown treats a tunnel as Pingora treats an upgraded session: it is left to
//! end by itself (the API workers close their sockets in order) until the process exits.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::v1::client::http_req_header_to_wire;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, IO};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access::Finished;
use crate::config::Settings;
use crate::forward::{self, has_token, Client};
use crate::forwarder::{self, ApiRequest};
use crate::metrics::Metrics;
use crate::path;
use crate::relay::{self, End};
use crate::reload::Snapshot;
use crate::respond;
use crate::route::{classify, Listener, Route};
use crate::upstream::{sticky_worker, Pool};

/// The largest request or response head the tunnel path reads (Pingora's own limit is
/// larger; a head this big is handed to Pingora, never cut).
pub const MAX_HEAD: usize = 16 * 1024;

/// More headers than this is not a browser's upgrade: Pingora's.
pub(crate) const MAX_HEADERS: usize = 64;

/// What the first bytes of a connection are.
pub enum Head {
    /// Not a whole head yet: read more.
    Partial,
    /// A WebSocket upgrade for the tunnel path (boxed: it is rare next to `Partial`).
    Upgrade(Box<Upgrade>),
    /// A request for the `/api/` fast path ([`crate::forwarder`]).
    Api(Box<ApiRequest>),
    /// Anything else: Pingora's.
    Other,
}

/// A parsed WebSocket upgrade request.
pub struct Upgrade {
    request: RequestHeader,
    /// Length of the head; bytes after it were sent ahead by the client.
    len: usize,
    client: Client,
}

/// Decide what the request head at the start of `bytes` is (pure).
pub fn parse_head(bytes: &[u8], settings: &Settings, client: Client) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => {
            if let Some(upgrade) = upgrade(&req, len, settings, client) {
                Head::Upgrade(Box::new(upgrade))
            } else if let Some(api) = forwarder::request(&req, len, settings, client) {
                Head::Api(Box::new(api))
            } else {
                Head::Other
            }
        }
        Ok(httparse::Status::Partial) if bytes.len() < MAX_HEAD => Head::Partial,
        _ => Head::Other,
    }
}

fn upgrade(
    req: &httparse::Request,
    len: usize,
    settings: &Settings,
    client: Client,
) -> Option<Upgrade> {
    if req.method != Some("GET") || req.version != Some(1) {
        return None;
    }
    let target = req.path?;
    let raw_path = target.split_once('?').map_or(target, |(p, _)| p);
    let clean = path::decode(raw_path).ok()?;
    if classify(Listener::Public, clean.as_str()) != Route::Realtime {
        return None;
    }
    let (mut websocket, mut connection_upgrade, mut host) = (false, false, None);
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).ok()?;
        let name = h.name;
        if name.eq_ignore_ascii_case("upgrade") {
            websocket |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("host") {
            // Two hosts is ambiguous; Pingora decides what that is.
            if host.replace(value).is_some() {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && value.trim() != "0")
        {
            return None;
        }
    }
    if !(websocket && connection_upgrade) {
        return None;
    }
    // The proxy answers this one with its redirect.
    if !client.tls
        && settings.redirect_http
        && settings
            .https_location(host.unwrap_or_default(), target)
            .is_some()
    {
        return None;
    }
    let mut request =
        RequestHeader::build("GET", target.as_bytes(), Some(req.headers.len())).ok()?;
    for h in req.headers.iter() {
        request.append_header(h.name.to_string(), h.value).ok()?;
    }
    Some(Upgrade {
        request,
        len,
        client,
    })
}

/// What the tunnel path shares with the proxy: the worker pool and the metrics.
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
    /// Serve `upgrade`, read from `client` as the first `read` bytes, to its end (the
    /// worker's answer relayed, or the tunnel closed). Meant to run as a task of its own,
    /// so the connection's Pingora task is not kept for the tunnel's life.
    pub async fn serve(
        self,
        client: Stream,
        upgrade: Box<Upgrade>,
        read: Vec<u8>,
        snap: Arc<Snapshot>,
    ) {
        // The handshake's state (heads, parsers, timers) is boxed so that it is freed when
        // the handshake ends: the task keeps only what the relay needs for hours.
        let open = Box::pin(self.open(client, upgrade, read, &snap.settings)).await;
        if let Some(open) = open {
            self.relay(open, snap.settings.tunnel_idle_timeout).await;
        }
    }

    /// Route the upgrade to a worker and relay its answer; `Some` when it was a `101`.
    async fn open(
        &self,
        mut client: Stream,
        upgrade: Box<Upgrade>,
        read: Vec<u8>,
        s: &Settings,
    ) -> Option<Open> {
        let Upgrade {
            mut request,
            len,
            client: who,
        } = *upgrade;
        let incoming_id = request
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok());
        let mut ex = Exchange {
            start: Instant::now(),
            path: request.uri.path().to_string(),
            client: who,
            request_id: forward::request_id(incoming_id, who.trusted),
            worker: None,
        };

        let Some(head) = forward::apply(&mut request, ex.client, &ex.request_id)
            .ok()
            .and_then(|()| http_req_header_to_wire(&request))
        else {
            let status = self
                .error(&mut client, &ex, 400, "bad_request", "malformed request")
                .await;
            self.record(&ex, status, 0, 0, Some(&"unforwardable request head"));
            return None;
        };
        // What the client sent after its head (if anything) follows it, in order.
        let early = read.get(len..).unwrap_or_default();
        let early_in = early.len() as u64;

        let sticky = sticky_worker(request.uri.query(), self.pool.len());
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
                let message = refused.message();
                let status = self
                    .error(&mut client, &ex, 503, "upstream_unavailable", message)
                    .await;
                self.record(&ex, status, 0, 0, Some(&message));
                return None;
            }
        };

        let sent = async {
            worker.write_all(&head).await?;
            worker.write_all(early).await
        };
        let response = match sent.await {
            Ok(()) => read_response(&mut worker, s.api_read_timeout).await,
            Err(e) => Err(Failure::Io(e)),
        };
        let (mut response, after) = match response {
            Ok(parts) => parts,
            Err(failure) => {
                let (code, message) = failure.answer();
                self.metrics.upstream_error(failure.kind());
                let status = self
                    .error(&mut client, &ex, failure.status(), code, message)
                    .await;
                self.record(&ex, status, early_in, 0, Some(&failure));
                return None;
            }
        };

        let status = response.status.as_u16();
        let ready = respond::secure(&mut response, ex.client.tls)
            .and_then(|()| response.insert_header("x-request-id", ex.request_id.as_str()));
        if status != 101 {
            let sent = match ready.and_then(|()| response.insert_header("connection", "close")) {
                Ok(()) => {
                    relay_answer(
                        &mut client,
                        &mut worker,
                        &response,
                        &after,
                        s.api_read_timeout,
                    )
                    .await
                }
                Err(_) => Err(io_error("unrepresentable response head")),
            };
            match sent {
                Ok(out) => self.record(&ex, status, early_in, out, None),
                Err(e) => self.record(&ex, status, early_in, 0, Some(&e)),
            }
            return None;
        }
        let opened = match ready {
            Ok(()) => write_head(&mut client, &response, &after).await,
            Err(_) => Err(io_error("unrepresentable response head")),
        };
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
            End::Idle => Some(io_error("tunnel idle timeout")),
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
        let Some(headers) = handoff_headers(ex) else {
            return false;
        };
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

    /// Answer with the gateway's JSON error and close; the status actually written.
    async fn error(
        &self,
        client: &mut Stream,
        ex: &Exchange,
        status: u16,
        code: &str,
        message: &str,
    ) -> u16 {
        let written = async {
            let reply = respond::final_error(status, code, message, ex.client.tls, &ex.request_id)
                .map_err(|_| io_error("error reply"))?;
            write_head(client, &reply.header, &reply.body).await?;
            client.shutdown().await
        };
        match written.await {
            Ok(()) => status,
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

pub(crate) fn io_error(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Why the worker's answer could not be read.
#[derive(Debug)]
pub(crate) enum Failure {
    Timeout,
    Io(io::Error),
    Malformed,
}

impl Failure {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Failure::Timeout => 504,
            _ => 502,
        }
    }

    /// The metrics `kind`, as the proxy's `fail_to_proxy` counts it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            _ => "protocol",
        }
    }

    pub(crate) fn answer(&self) -> (&'static str, &'static str) {
        match self {
            Failure::Timeout => ("upstream_timeout", "the api worker did not answer in time"),
            _ => ("bad_gateway", "the api worker failed to answer"),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout => f.write_str("api worker response head timed out"),
            Failure::Io(e) => write!(f, "reading the api worker's response: {e}"),
            Failure::Malformed => f.write_str("malformed response head from the api worker"),
        }
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
fn handoff_headers(ex: &Exchange) -> Option<Vec<u8>> {
    let mut response = ResponseHeader::build(101, Some(8)).ok()?;
    respond::secure(&mut response, ex.client.tls).ok()?;
    response
        .insert_header("x-request-id", ex.request_id.as_str())
        .ok()?;
    let mut buf = BytesMut::with_capacity(512);
    response.header_to_h1_wire(&mut buf);
    buf.put_slice(b"\r\n");
    Some(buf.to_vec())
}

/// Read the worker's response head within `timeout`: the head, and the bytes after it.
async fn read_response(
    worker: &mut TcpStream,
    timeout: Duration,
) -> Result<(ResponseHeader, Vec<u8>), Failure> {
    let read = async {
        let mut buf = Vec::with_capacity(1024);
        loop {
            if let Some(parsed) = parse_response(&buf)? {
                return Ok(parsed);
            }
            if buf.len() >= MAX_HEAD {
                return Err(Failure::Malformed);
            }
            buf.reserve(1024);
            let n = worker.read_buf(&mut buf).await.map_err(Failure::Io)?;
            if n == 0 {
                return Err(Failure::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHeader, Vec<u8>)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Failure::Malformed),
    };
    let code = resp.code.ok_or(Failure::Malformed)?;
    let mut header =
        ResponseHeader::build(code, Some(resp.headers.len())).map_err(|_| Failure::Malformed)?;
    for h in resp.headers.iter() {
        header
            .append_header(h.name.to_string(), h.value)
            .map_err(|_| Failure::Malformed)?;
    }
    Ok(Some((header, buf[len..].to_vec())))
}

/// Write a response head and the bytes that follow it, flushed.
pub(crate) async fn write_head<S>(
    client: &mut S,
    head: &ResponseHeader,
    after: &[u8],
) -> io::Result<()>
where
    S: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = BytesMut::with_capacity(512 + after.len());
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(head.status.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(head.get_reason_phrase().unwrap_or_default().as_bytes());
    buf.put_slice(b"\r\n");
    head.header_to_h1_wire(&mut buf);
    buf.put_slice(b"\r\n");
    buf.put_slice(after);
    client.write_all(&buf).await?;
    client.flush().await
}

/// Relay a non-`101` answer (head, then its body) and close: the client never talks to
/// the worker on a connection the gateway did not route. Returns the body bytes sent.
async fn relay_answer<C, W>(
    client: &mut C,
    worker: &mut W,
    head: &ResponseHeader,
    after: &[u8],
    timeout: Duration,
) -> io::Result<u64>
where
    C: AsyncWrite + Unpin + ?Sized,
    W: AsyncRead + Unpin + ?Sized,
{
    let status = head.status.as_u16();
    let declared = head
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    // No body, a sized one, or (chunked, unsized) everything until the worker closes or
    // goes quiet: the connection closes after it either way.
    let limit = match declared {
        _ if status < 200 || status == 204 || status == 304 => 0,
        Some(n) => n,
        None => u64::MAX,
    };
    let first = after
        .get(
            ..usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .min(after.len()),
        )
        .unwrap_or_default();
    write_head(client, head, first).await?;
    let mut sent = first.len() as u64;
    let rest = limit - sent;
    if rest > 0 {
        let mut body = (&mut *worker).take(rest);
        if let Ok(copied) = tokio::time::timeout(timeout, tokio::io::copy(&mut body, client)).await
        {
            sent += copied?;
        }
    }
    client.flush().await?;
    client.shutdown().await?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(redirect: bool) -> Settings {
        let mut c = btp_config::Config::default();
        if redirect {
            c.gateway.tls_listen = Some("127.0.0.1:8443".into());
            c.gateway.redirect_http = true;
        }
        Settings::from_config(&c).unwrap_or_else(|e| panic!("{e}"))
    }

    fn head(target: &str, extra: &str) -> String {
        format!(
            "GET {target} HTTP/1.1\r\nHost: btp.example.ma\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn client(tls: bool) -> Client {
        Client {
            peer: Some(std::net::IpAddr::from([127, 0, 0, 1])),
            trusted: false,
            tls,
        }
    }

    fn is_upgrade(bytes: &str, redirect: bool, tls: bool) -> bool {
        matches!(
            parse_head(bytes.as_bytes(), &settings(redirect), client(tls)),
            Head::Upgrade(_)
        )
    }

    const WS: &str = "/socket.io/?EIO=4&transport=websocket";

    #[test]
    fn only_a_bodiless_websocket_get_on_the_realtime_route_is_tunnelled() {
        assert!(is_upgrade(&head(WS, ""), false, false));
        assert!(is_upgrade(&head(WS, "Content-Length: 0\r\n"), false, false));
        assert!(!is_upgrade(&head("/api/projects", ""), false, false));
        assert!(!is_upgrade(&head("/socket.io/../api/x", ""), false, false));
        assert!(!is_upgrade(
            &head(WS, "Content-Length: 5\r\n"),
            false,
            false
        ));
        assert!(!is_upgrade(
            &head(WS, "Transfer-Encoding: chunked\r\n"),
            false,
            false
        ));
        assert!(!is_upgrade(&head(WS, "Host: other\r\n"), false, false));
        assert!(!is_upgrade(
            &head(WS, "").replacen("GET", "POST", 1),
            false,
            false
        ));
        assert!(!is_upgrade(
            &head(WS, "").replace("Upgrade: websocket", "Upgrade: h2c"),
            false,
            false
        ));
        assert!(!is_upgrade(
            &head(WS, "").replace("keep-alive, Upgrade", "keep-alive"),
            false,
            false
        ));
        assert!(!is_upgrade(
            &head(WS, "").replace("HTTP/1.1", "HTTP/1.0"),
            false,
            false
        ));
    }

    #[test]
    fn an_upgrade_the_proxy_would_redirect_to_https_is_left_to_it() {
        assert!(!is_upgrade(&head(WS, ""), true, false));
        assert!(is_upgrade(&head(WS, ""), true, true));
    }

    #[test]
    fn a_partial_head_asks_for_more_and_an_oversized_or_malformed_one_goes_to_pingora() {
        let s = settings(false);
        let full = head(WS, "");
        assert!(matches!(
            parse_head(&full.as_bytes()[..20], &s, client(false)),
            Head::Partial
        ));
        let huge = format!("GET {WS} HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(
            parse_head(huge.as_bytes(), &s, client(false)),
            Head::Other
        ));
        assert!(matches!(
            parse_head(b"\x16\x03\x01 garbage\r\n\r\n", &s, client(false)),
            Head::Other
        ));
        assert!(matches!(
            parse_head(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &s, client(false)),
            Head::Other
        ));
    }
}
