//! Deadlines for an HTTP/2 connection, which Pingora's HTTP/2 server does not keep: a
//! connection that never sends its preface, or sends nothing and is sent nothing for
//! `keepalive_timeout`, is closed; so is one that leaves a header block unfinished (a
//! `HEADERS` frame without `END_HEADERS`, and no last `CONTINUATION`) for
//! `header_timeout` — each stream's head is as bounded as an HTTP/1 head.
//!
//! The stream Pingora reads is wrapped: its reads fail with `TimedOut` at the deadline,
//! and the HTTP/2 server then closes the connection. To know where header blocks are,
//! the wrapper follows the frame boundaries of what it reads (the 9-byte frame headers
//! after the 24-byte preface) and nothing more — it parses no frame.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where the bytes read so far leave the connection, frame-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    Preface { left: usize },
    FrameHeader { head: [u8; 9], have: usize },
    Payload { left: u32 },
}

/// Follows frame boundaries to tell when a header block is open (pure).
#[derive(Debug, Clone, Copy)]
pub struct Frames {
    scan: Scan,
    in_block: bool,
}

impl Default for Frames {
    fn default() -> Self {
        Frames {
            scan: Scan::Preface { left: PREFACE_LEN },
            in_block: false,
        }
    }
}

impl Frames {
    /// Follow `bytes`, read after the ones already followed.
    pub fn follow(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.scan {
                Scan::Preface { left } => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.scan = Scan::FrameHeader {
                            head: [0; 9],
                            have: 0,
                        };
                    }
                }
                Scan::FrameHeader { head, have } => {
                    let n = (9 - *have).min(bytes.len());
                    head[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have == 9 {
                        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
                        let (kind, flags) = (head[3], head[4]);
                        match kind {
                            HEADERS => self.in_block = flags & END_HEADERS == 0,
                            CONTINUATION if flags & END_HEADERS != 0 => self.in_block = false,
                            _ => {}
                        }
                        self.scan = if len == 0 {
                            Scan::FrameHeader {
                                head: [0; 9],
                                have: 0,
                            }
                        } else {
                            Scan::Payload { left: len }
                        };
                    }
                }
                Scan::Payload { left } => {
                    let n = (*left as usize).min(bytes.len());
                    *left -= n as u32;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.scan = Scan::FrameHeader {
                            head: [0; 9],
                            have: 0,
                        };
                    }
                }
            }
        }
    }

    /// A header block is open: its last frame has not come.
    pub fn in_header_block(&self) -> bool {
        self.in_block
    }
}

/// An HTTP/2 connection under its deadlines.
#[derive(Debug)]
pub struct H2Deadlines {
    inner: Stream,
    keepalive: Duration,
    header: Duration,
    /// The last byte read or written.
    active: Instant,
    /// When the open header block began.
    block_since: Option<Instant>,
    frames: Frames,
    timer: Option<Pin<Box<Sleep>>>,
}

impl H2Deadlines {
    pub fn new(inner: Stream, keepalive: Duration, header: Duration) -> H2Deadlines {
        H2Deadlines {
            inner,
            keepalive,
            header,
            active: Instant::now(),
            block_since: None,
            frames: Frames::default(),
            timer: None,
        }
    }

    fn deadline(&self) -> Instant {
        match self.block_since {
            Some(since) => since + self.header,
            None => self.active + self.keepalive,
        }
    }
}

fn late() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "http/2 connection idle or stalled",
    )
}

impl AsyncRead for H2Deadlines {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let deadline = this.deadline();
        if Instant::now() >= deadline {
            return Poll::Ready(Err(late()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.active = Instant::now();
                    this.frames.follow(read);
                    this.block_since = match (this.frames.in_header_block(), this.block_since) {
                        (true, None) => Some(this.active),
                        (true, since) => since,
                        (false, _) => None,
                    };
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                // Only a read that has to wait needs the timer.
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(late())),
                    Poll::Pending => Poll::Pending,
                }
            }
            ready => ready,
        }
    }
}

impl AsyncWrite for H2Deadlines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active = Instant::now();
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.active = Instant::now();
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for H2Deadlines {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for H2Deadlines {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for H2Deadlines {
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

impl GetTimingDigest for H2Deadlines {
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

impl GetProxyDigest for H2Deadlines {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for H2Deadlines {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for H2Deadlines {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: usize) -> Vec<u8> {
        let len = (payload as u32).to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.extend(std::iter::repeat_n(0u8, payload));
        f
    }

    #[test]
    fn a_header_block_is_open_from_headers_to_its_end_in_any_split() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 6)); // SETTINGS
        let settings_end = bytes.len();
        bytes.extend(frame(HEADERS, 0, 10)); // without END_HEADERS
        let open_at = bytes.len();
        bytes.extend(frame(CONTINUATION, 0, 3));
        // The block is complete once its last frame's header has come.
        let closed_at = bytes.len() + 9;
        bytes.extend(frame(CONTINUATION, END_HEADERS, 2));
        bytes.extend(frame(0x0, 0, 7)); // DATA
        for step in 1..bytes.len() {
            let mut frames = Frames::default();
            let mut at = 0;
            for piece in bytes.chunks(step) {
                frames.follow(piece);
                at += piece.len();
                if at <= settings_end {
                    assert!(!frames.in_header_block(), "step {step} at {at}");
                }
                if (open_at..closed_at).contains(&at) {
                    assert!(frames.in_header_block(), "step {step} at {at}");
                }
                if at >= closed_at {
                    assert!(!frames.in_header_block(), "step {step} at {at}");
                }
            }
        }
        let mut whole = Frames::default();
        whole.follow(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        whole.follow(&frame(HEADERS, END_HEADERS, 4));
        assert!(
            !whole.in_header_block(),
            "a block in one frame is never open"
        );
    }
}
