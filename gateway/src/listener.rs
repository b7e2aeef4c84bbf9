//! The public listeners' connection layer: a total deadline on reading request headers,
//! which Pingora does not have (its read timeout restarts on every byte, so a client
//! trickling one header byte a minute would hold a connection forever).
//!
//! [`Edge`] wraps the proxy application and hands it every HTTP/1 connection inside a
//! [`HeaderDeadline`] stream. The deadline is armed while a request's headers are being
//! read and disarmed by the proxy's first phase ([`disarm`]); between keep-alive requests
//! it re-arms on the first byte of the next request, so an idle keep-alive connection is
//! governed by the keep-alive timeout and a slow one by this deadline. HTTP/2 connections
//! are passed through untouched: their streams are multiplexed, and h2 has its own limits.
//!
//! Request heads of an HTTP/1 connection are read here, under the same deadline: a
//! WebSocket upgrade goes to the lightweight tunnel path ([`crate::tunnel`]), a bodiless
//! `/api/` request to the fast path ([`crate::forwarder`]), after which the next head is
//! read here again; anything else goes to Pingora with the bytes read replayed in front of
//! the stream, and Pingora keeps the connection from then on.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::config::Settings;
use crate::forward::Client;
use crate::forwarder::{Forwarder, Next};
use crate::tunnel::{parse_head, Head, Tunnels, MAX_HEAD};

// The shared state is `generation << 2 | mode`: every arm/disarm starts a new generation,
// so a deadline left from an earlier request can never apply to a later one, even when
// no read happened in between.
const MODE_MASK: u64 = 0b11;
const DISARMED: u64 = 0;
/// The timer runs from now (a fresh connection: its first request is due).
const ARMED_NOW: u64 = 1;
/// The timer starts with the next byte read (a kept-alive connection between requests).
const ARMED_ON_DATA: u64 = 2;

/// Wraps a Pingora application with the header deadline and the tunnel path.
pub struct Edge<A> {
    app: Arc<A>,
    /// `header_timeout` is read per connection from the live settings (reloadable).
    live: crate::reload::Live,
    tunnels: Tunnels,
    forwarder: Arc<Forwarder>,
    /// Set when the keep-alive drain is over: a first request head still being read then
    /// goes to Pingora, which drops it as it drops every idle connection.
    closing: watch::Sender<bool>,
}

impl<A> Edge<A> {
    pub fn new(
        app: Arc<A>,
        live: crate::reload::Live,
        tunnels: Tunnels,
        forwarder: Arc<Forwarder>,
    ) -> Edge<A> {
        Edge {
            app,
            live,
            tunnels,
            forwarder,
            closing: watch::Sender::new(false),
        }
    }

    /// Read a request head (or what arrives of it before the deadline, the end of the
    /// stream, the size cap or the drain), after the `read` bytes already in, and say what
    /// it is.
    async fn next_head(
        &self,
        io: &mut HeaderDeadline,
        settings: &Settings,
        client: Client,
        mut buf: Vec<u8>,
    ) -> (Head, Vec<u8>) {
        let mut closing = self.closing.subscribe();
        // Bounded: every round adds at least one byte, and the head at most MAX_HEAD.
        for _ in 0..=MAX_HEAD {
            if !buf.is_empty() {
                match parse_head(&buf, settings, client) {
                    Head::Partial => {}
                    head => return (head, buf),
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(buf.len().clamp(2048, MAX_HEAD));
            }
            let read = tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => read,
                _ = closing.wait_for(|closing| *closing) => Ok(0),
            };
            if read.unwrap_or(0) == 0 {
                break;
            }
        }
        (Head::Other, buf)
    }
}

#[async_trait]
impl<A> ServerApp for Edge<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        if io.selected_alpn_proto() == Some(ALPN::H2) {
            return self.app.process_new(io, shutdown).await;
        }
        let mut snap = self.live.load_full();
        let tls = io.get_ssl_digest().is_some();
        let peer = io
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut io = HeaderDeadline::new(io, snap.settings.header_timeout);
        let mut read = Vec::new();
        // The fast path's response buffer, kept across the connection's requests.
        let mut scratch = Vec::new();
        // Bounded by the client: each round serves one of its requests, and a connection
        // that stops sending ends in `next_head` (end of stream, deadline or drain).
        for served in 0u64.. {
            let client = Client {
                peer,
                trusted: peer.is_some_and(|ip| snap.settings.is_trusted(ip)),
                tls,
            };
            let (head, bytes) = self.next_head(&mut io, &snap.settings, client, read).await;
            match head {
                Head::Upgrade(upgrade) => {
                    // A task of its own: this connection's Pingora task (≈ 9 KiB with its
                    // TLS handshake state) ends now instead of living as long as the
                    // tunnel.
                    let tunnels = self.tunnels.clone();
                    tokio::spawn(tunnels.serve(io.into_inner(), upgrade, bytes, snap));
                    return None;
                }
                Head::Api(request) => {
                    io.set_mode(DISARMED);
                    // From the moment shutdown begins (as Pingora's sessions do), so that
                    // clients stop reusing the connection before the drain closes it.
                    let draining = *shutdown.borrow() || *self.closing.borrow();
                    let next = self
                        .forwarder
                        .exchange(&mut io, &request, &snap.settings, draining, &mut scratch)
                        .await;
                    if next == Next::Close {
                        Shutdown::shutdown(&mut *io.inner).await;
                        return None;
                    }
                    // Whatever the client sent after this head (pipelined) is the next
                    // request's start; the buffer is kept for it.
                    let mut bytes = bytes;
                    bytes.drain(..request.len.min(bytes.len()));
                    // The next request's deadline runs from its first byte: now, if some
                    // of it is here already.
                    io.set_mode(if bytes.is_empty() {
                        ARMED_ON_DATA
                    } else {
                        ARMED_NOW
                    });
                    read = bytes;
                    snap = self.live.load_full();
                }
                // A kept-alive connection the client closed (or that the drain ended)
                // between requests: nothing for Pingora to answer.
                Head::Other | Head::Partial if served > 0 && bytes.is_empty() => return None,
                Head::Other | Head::Partial => {
                    // Pingora reads the head again from the start, under the same running
                    // deadline, and keeps the connection from then on.
                    io.replay = bytes;
                    return self.app.process_new(Box::new(io), shutdown).await;
                }
            }
        }
        None
    }

    /// Called once the listeners stopped accepting (shutdown or graceful upgrade). Pingora
    /// then drops every idle keep-alive connection at once, which cuts a request a client
    /// is sending on one at that moment; for [`KEEPALIVE_DRAIN`] such a request is still
    /// read and answered, with `Connection: close`, so the client reconnects (to the new
    /// process, in an upgrade) instead of seeing a reset.
    async fn cleanup(&self) {
        tokio::time::sleep(KEEPALIVE_DRAIN).await;
        self.closing.send_replace(true);
        self.app.cleanup().await
    }
}

/// Shorter than Pingora's grace period (`grace_period_seconds`, 1 s), so that a request
/// read at the end of it still has time to be answered.
const KEEPALIVE_DRAIN: Duration = Duration::from_millis(500);

/// A connection whose reads fail with `TimedOut` once the armed deadline passes.
#[derive(Debug)]
pub struct HeaderDeadline {
    inner: Stream,
    timeout: Duration,
    state: Arc<AtomicU64>,
    /// The generation `deadline` and `timer` belong to.
    generation: u64,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes already read from `inner` by the edge, handed out again before `inner` is
    /// read; freed once handed out.
    replay: Vec<u8>,
}

impl HeaderDeadline {
    fn new(inner: Stream, timeout: Duration) -> HeaderDeadline {
        HeaderDeadline {
            inner,
            timeout,
            state: Arc::new(AtomicU64::new(ARMED_NOW)),
            generation: 0,
            deadline: None,
            timer: None,
            replay: Vec::new(),
        }
    }

    /// The connection without the deadline (an upgrade leaves the HTTP layer for good).
    fn into_inner(self) -> Stream {
        self.inner
    }

    /// Hand out replayed bytes into `buf`; false when there are none.
    fn poll_replay(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.replay.is_empty() {
            return false;
        }
        let n = self.replay.len().min(buf.remaining());
        buf.put_slice(&self.replay[..n]);
        self.replay.drain(..n);
        if self.replay.is_empty() {
            self.replay = Vec::new();
        }
        true
    }
}

impl HeaderDeadline {
    fn set_mode(&self, mode: u64) {
        let current = self.state.load(Ordering::Relaxed);
        let next_generation = (current >> 2) + 1;
        self.state
            .store(next_generation << 2 | mode, Ordering::Relaxed);
    }
}

fn deadline_of(stream: Option<&Stream>) -> Option<&HeaderDeadline> {
    let io: &dyn IO = &**stream?;
    io.as_any().downcast_ref::<HeaderDeadline>()
}

/// The request's headers are in: stop the clock (body reads and upgraded tunnels have
/// their own timeouts).
pub fn disarm(stream: Option<&Stream>) {
    if let Some(d) = deadline_of(stream) {
        d.set_mode(DISARMED);
    }
}

/// The request is done: the next one on this connection gets the deadline again, counted
/// from its first byte.
pub fn rearm(stream: Option<&Stream>) {
    if let Some(d) = deadline_of(stream) {
        d.set_mode(ARMED_ON_DATA);
    }
}

impl AsyncRead for HeaderDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // Replayed bytes were received in time already.
        if this.poll_replay(buf) {
            return Poll::Ready(Ok(()));
        }
        let state = this.state.load(Ordering::Relaxed);
        let (generation, mode) = (state >> 2, state & MODE_MASK);
        if generation != this.generation {
            this.generation = generation;
            this.deadline = None;
        }
        if mode == DISARMED {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if mode == ARMED_NOW && this.deadline.is_none() {
            this.deadline = Some(Instant::now() + this.timeout);
        }
        if this.deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request headers not received in time",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match (&polled, this.deadline) {
            (Poll::Ready(Ok(())), None) if buf.filled().len() > before => {
                this.deadline = Some(Instant::now() + this.timeout);
            }
            // Only a read that has to wait needs a timer to wake it at the deadline; the
            // common case (bytes already there) costs a clock read, not a timer.
            (Poll::Pending, Some(deadline)) => {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request headers not received in time",
                    )));
                }
            }
            _ => {}
        }
        polled
    }
}

use std::future::Future;

impl AsyncWrite for HeaderDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderDeadline {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeaderDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for HeaderDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if !self.replay.is_empty() {
            // Peek at what will be read first; too short a replay is "cannot peek".
            let n = buf.len();
            return Ok(match self.replay.get(..n) {
                Some(head) => {
                    buf.copy_from_slice(head);
                    true
                }
                None => false,
            });
        }
        self.inner.try_peek(buf).await
    }
}
