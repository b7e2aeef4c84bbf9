//! The byte relay of an upgraded (WebSocket) tunnel: both directions between the client
//! and the API worker, half-close passed on, and one idle limit for the tunnel as a whole.
//!
//! Hand-written on purpose. A gateway holds thousands of tunnels that are idle nearly all
//! the time (a heartbeat every 25 s), so what a tunnel keeps *between* frames is what it
//! costs. `tokio::io::copy_bidirectional` keeps a buffer per direction for the tunnel's
//! whole life (8 KiB each by default); Pingora's session kept far more. Here a poll reads
//! into one per-thread scratch buffer, borrowed only inside that poll, and writes the bytes
//! straight on; only what the other side cannot take yet is copied into a per-direction
//! `Vec`, freed as soon as it drained. An idle tunnel owns no buffer at all.
//!
//! The idle limit costs one timer per tunnel. Traffic does not touch it: a poll that moved
//! bytes only records the instant, and when the timer fires it is re-armed to the last
//! activity plus the limit, or ends the tunnel if that has passed.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// One TLS record; large frames take a few polls, small ones one read.
const SCRATCH_SIZE: usize = 16 * 1024;

/// Reads per direction in one poll before yielding to the other tasks of the thread.
const READS_PER_POLL: usize = 16;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_SIZE].into_boxed_slice());
}

/// Bytes moved, per direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub client_to_worker: u64,
    pub worker_to_client: u64,
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum End {
    /// Both sides finished sending (each EOF was passed on as a half-close).
    Closed,
    /// Nothing moved either way for the idle limit.
    Idle,
    /// A read, write or shutdown failed; both sides are dropped.
    Failed(io::Error),
}

/// Relay between `client` and `worker` until both directions end, one fails, or no byte
/// moves for `idle`.
pub async fn relay<C, W>(client: &mut C, worker: &mut W, idle: Duration) -> (Moved, End)
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    W: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut up = Half::default();
    let mut down = Half::default();
    let mut last_activity = Instant::now();
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let end = poll_fn(|cx| {
        let mut active = false;
        let up_done = match up.poll(cx, client, worker, &mut active) {
            Poll::Ready(Err(e)) => return Poll::Ready(End::Failed(e)),
            polled => polled.is_ready(),
        };
        let down_done = match down.poll(cx, worker, client, &mut active) {
            Poll::Ready(Err(e)) => return Poll::Ready(End::Failed(e)),
            polled => polled.is_ready(),
        };
        if up_done && down_done {
            return Poll::Ready(End::Closed);
        }
        if active {
            last_activity = Instant::now();
        }
        // At most two rounds: a fired timer is re-armed once, to a deadline in the future.
        for _ in 0..2 {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = last_activity + idle;
            if deadline <= Instant::now() {
                return Poll::Ready(End::Idle);
            }
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await;
    let moved = Moved {
        client_to_worker: up.bytes,
        worker_to_client: down.bytes,
    };
    (moved, end)
}

/// One direction: what it still owes its writer, and where it is in its life.
#[derive(Debug, Default)]
struct Half {
    /// Bytes read but not yet taken by the writer; empty (unallocated) when caught up.
    owed: Vec<u8>,
    /// How much of `owed` was written.
    written: usize,
    /// Bytes were written since the last flush (Pingora's client stream buffers writes).
    unflushed: bool,
    /// The reader reached EOF: once caught up, shut the writer down.
    eof: bool,
    done: bool,
    bytes: u64,
}

/// What one read did.
enum Read {
    Data,
    Eof,
    Pending,
    Failed(io::Error),
}

impl Half {
    /// Move bytes from `r` to `w`; ready when this direction is finished.
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut R,
        w: &mut W,
        active: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        for _ in 0..READS_PER_POLL {
            ready!(self.poll_catch_up(cx, w, active))?;
            if self.eof {
                // A peer already gone cannot be half-closed; that is not a failure.
                let _ = ready!(Pin::new(&mut *w).poll_shutdown(cx));
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match self.read_and_forward(cx, r, w) {
                Read::Data => *active = true,
                Read::Eof => self.eof = true,
                Read::Pending => return Poll::Pending,
                Read::Failed(e) => return Poll::Ready(Err(e)),
            }
        }
        // A busy tunnel must not starve the other connections of this thread.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Write what is owed and flush; ready when the writer has taken everything.
    fn poll_catch_up<W>(
        &mut self,
        cx: &mut Context<'_>,
        w: &mut W,
        active: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        while self.written < self.owed.len() {
            let n = ready!(Pin::new(&mut *w).poll_write(cx, &self.owed[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            *active = true;
        }
        if !self.owed.is_empty() {
            // Freed, not cleared: a caught-up direction keeps no memory.
            self.owed = Vec::new();
            self.written = 0;
        }
        if self.unflushed {
            ready!(Pin::new(&mut *w).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// One read into the thread's scratch buffer, written straight on; what the writer
    /// does not take now is copied into `owed`.
    fn read_and_forward<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W) -> Read
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        SCRATCH.with(|scratch| {
            // Never re-entered (a poll does not poll another tunnel), but a busy buffer
            // is a retry, not a panic.
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                cx.waker().wake_by_ref();
                return Read::Pending;
            };
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut *r).poll_read(cx, &mut buf) {
                Poll::Pending => return Read::Pending,
                Poll::Ready(Err(e)) => return Read::Failed(e),
                Poll::Ready(Ok(())) => {}
            }
            let data = buf.filled();
            if data.is_empty() {
                return Read::Eof;
            }
            self.bytes += data.len() as u64;
            self.unflushed = true;
            let mut sent = 0;
            while sent < data.len() {
                match Pin::new(&mut *w).poll_write(cx, &data[sent..]) {
                    Poll::Ready(Ok(0)) => return Read::Failed(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => sent += n,
                    Poll::Ready(Err(e)) => return Read::Failed(e),
                    Poll::Pending => break,
                }
            }
            self.owed.extend_from_slice(&data[sent..]);
            Read::Data
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_half_close_is_passed_on() {
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (mut worker, mut worker_end) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move {
            relay(&mut client_end, &mut worker_end, Duration::from_secs(5)).await
        });
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&sent).await;
            let _ = client.shutdown().await;
            let mut back = Vec::new();
            let _ = client.read_to_end(&mut back).await;
            back
        });
        let mut got = Vec::new();
        let _ = worker.read_to_end(&mut got).await;
        assert!(
            got == big,
            "worker got {} of {} bytes",
            got.len(),
            big.len()
        );
        let _ = worker.write_all(b"bye").await;
        let _ = worker.shutdown().await;
        let back = writer.await.unwrap_or_default();
        assert_eq!(back, b"bye");
        let (moved, end) = relay.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(end, End::Closed), "{end:?}");
        assert_eq!(moved.client_to_worker, 200_000);
        assert_eq!(moved.worker_to_client, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_ends_after_the_idle_limit_and_traffic_keeps_it_open() {
        let (mut client, mut client_end) = tokio::io::duplex(64);
        let (_worker, mut worker_end) = tokio::io::duplex(64);
        let started = Instant::now();
        let relay = tokio::spawn(async move {
            relay(&mut client_end, &mut worker_end, Duration::from_secs(10)).await
        });
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            let _ = client.write_all(b"x").await;
        }
        let (_, end) = relay.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(end, End::Idle), "{end:?}");
        let lived = started.elapsed();
        assert!(lived >= Duration::from_secs(28), "ended after {lived:?}");
    }
}
