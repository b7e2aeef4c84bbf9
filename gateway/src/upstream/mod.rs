//! The API workers: which one a request goes to ([`Pool`]), the health checks that decide
//! which may be picked ([`health`]), the kept-alive connections to them ([`conns`]), and
//! the one way every path words a failure to reach or hear from one ([`failure`]).
//!
//! Worker `i` is `api_worker_addr(i)`. Engine.IO sids start with the two hex digits of the
//! worker that created them (CONTRACTS.md), so a `/socket.io/` request carrying a sid goes
//! back to that worker; everything else is round robin over the healthy ones. A worker is
//! healthy after its `GET /api/health` answered 200, and stops being healthy on a failed
//! check or a failed connect; with none healthy the gateway answers 503 at once instead of
//! letting requests queue on dead sockets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::metrics::Metrics;

pub mod conns;
pub mod failure;
pub mod health;

pub use failure::Failure;

#[derive(Debug)]
struct Worker {
    addr: SocketAddr,
    healthy: AtomicBool,
    /// Part of the upstream connection pool key: bumped when the process behind this
    /// address is replaced, so pooled keep-alive connections to the old one are never
    /// reused while it closes them.
    generation: AtomicU64,
    /// Under `btp up`: the channel that gives this slot's process a WebSocket connection
    /// (`btp_handoff`); set once by the supervisor.
    handoff: OnceLock<btp_handoff::Sender>,
}

/// The API workers and their health.
#[derive(Debug)]
pub struct Pool {
    workers: Vec<Worker>,
    next: AtomicUsize,
}

impl Pool {
    /// Workers start unhealthy: readiness is something a worker proves, and the first
    /// health check runs as soon as the gateway starts.
    pub fn new(addrs: Vec<SocketAddr>) -> Pool {
        Pool {
            workers: addrs
                .into_iter()
                .map(|addr| Worker {
                    addr,
                    healthy: AtomicBool::new(false),
                    generation: AtomicU64::new(0),
                    handoff: OnceLock::new(),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    pub fn addr(&self, index: usize) -> Option<SocketAddr> {
        self.workers.get(index).map(|w| w.addr)
    }

    pub fn is_healthy(&self, index: usize) -> bool {
        self.workers
            .get(index)
            .is_some_and(|w| w.healthy.load(Ordering::Relaxed))
    }

    pub fn set_healthy(&self, index: usize, healthy: bool) {
        if let Some(w) = self.workers.get(index) {
            w.healthy.store(healthy, Ordering::Relaxed);
        }
    }

    /// The connection-pool generation of worker `index`.
    pub fn generation(&self, index: usize) -> u64 {
        self.workers
            .get(index)
            .map_or(0, |w| w.generation.load(Ordering::Relaxed))
    }

    /// Stop reusing pooled connections to worker `index` (its process is about to stop).
    pub fn retire_connections(&self, index: usize) {
        if let Some(w) = self.workers.get(index) {
            w.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Give worker `index` its handoff channel (the supervisor, once per slot).
    pub fn set_handoff(&self, index: usize, sender: btp_handoff::Sender) {
        if let Some(w) = self.workers.get(index) {
            let _ = w.handoff.set(sender);
        }
    }

    /// The handoff channel of worker `index`, if it is supervised here.
    pub fn handoff(&self, index: usize) -> Option<&btp_handoff::Sender> {
        self.workers.get(index).and_then(|w| w.handoff.get())
    }

    /// Passive health: a connect to worker `index` failed. Refused or reset, the worker is
    /// gone: it is out now instead of at the next check. Timed out, its accept queue is
    /// full (a worker that is alive but stopped still completes handshakes): it is busy,
    /// not gone, and the health check decides.
    pub fn connect_failed(&self, metrics: &Metrics, index: usize, error: &std::io::Error) {
        metrics.upstream_error("connect");
        if error.kind() == std::io::ErrorKind::TimedOut {
            tracing::warn!(worker = index, %error, "api worker slow to accept");
            return;
        }
        self.set_healthy(index, false);
        metrics.set_upstream_health(index, false);
        tracing::warn!(worker = index, %error, "api worker unreachable");
    }

    pub fn healthy_count(&self) -> usize {
        (0..self.len()).filter(|i| self.is_healthy(*i)).count()
    }

    /// The worker for a request: the sticky one if given and healthy, else the next healthy
    /// one in round-robin order; `None` when no worker is healthy.
    pub fn pick(&self, sticky: Option<usize>) -> Option<(usize, SocketAddr)> {
        if let Some(i) = sticky.filter(|i| self.is_healthy(*i)) {
            return self.addr(i).map(|a| (i, a));
        }
        let n = self.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|i| self.is_healthy(*i))
            .and_then(|i| self.addr(i).map(|a| (i, a)))
    }
}

/// Why no worker took a connection.
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    NoneHealthy,
    Unreachable,
    /// Every connection the worker may have is carrying a request
    /// (`gateway.upstream_max_connections`), and none came back in time.
    Busy,
}

impl Refused {
    /// The message of the 503 a client gets.
    pub fn message(self) -> &'static str {
        match self {
            Refused::NoneHealthy => "no healthy api worker",
            Refused::Unreachable => "no api worker could be reached",
            Refused::Busy => "the api workers are busy",
        }
    }
}

impl Pool {
    /// Connect to the worker for `sticky` (or the next healthy one); a worker that refuses
    /// is marked unhealthy and the next one tried, once. A connect that times out is not
    /// tried again.
    pub async fn connect(
        &self,
        metrics: &Metrics,
        sticky: Option<usize>,
        timeout: Duration,
    ) -> Result<(usize, TcpStream), Refused> {
        let mut refused = Refused::NoneHealthy;
        for _attempt in 0..2 {
            let Some((index, addr)) = self.pick(sticky) else {
                break;
            };
            let error = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // Requests and frames are small and latency-bound.
                    let _ = stream.set_nodelay(true);
                    return Ok((index, stream));
                }
                Ok(Err(e)) => e,
                Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            };
            self.connect_failed(metrics, index, &error);
            refused = Refused::Unreachable;
            if error.kind() == std::io::ErrorKind::TimedOut {
                break;
            }
        }
        Err(refused)
    }
}

/// The worker an Engine.IO `sid` in `query` belongs to, if it names one of `workers`.
pub fn sticky_worker(query: Option<&str>, workers: usize) -> Option<usize> {
    let sid = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("sid="))?;
    let prefix = sid.get(..2)?;
    let index = usize::from(u8::from_str_radix(prefix, 16).ok()?);
    (index < workers).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: u16) -> Pool {
        Pool::new(
            (0..n)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 3001 + i)))
                .collect(),
        )
    }

    #[test]
    fn sid_prefix_names_the_worker() {
        assert_eq!(
            sticky_worker(
                Some("EIO=4&transport=polling&sid=01abcdefghijklmnopqrstu"),
                3
            ),
            Some(1)
        );
        assert_eq!(sticky_worker(Some("sid=00xyz"), 1), Some(0));
        assert_eq!(sticky_worker(Some("sid=0aXYZ"), 11), Some(10));
        assert_eq!(sticky_worker(Some("sid=05xyz"), 3), None);
        assert_eq!(sticky_worker(Some("sid=zzxyz"), 3), None);
        assert_eq!(sticky_worker(Some("sid=0"), 3), None);
        assert_eq!(sticky_worker(Some("EIO=4&transport=websocket"), 3), None);
        assert_eq!(sticky_worker(None, 3), None);
    }

    #[test]
    fn round_robin_skips_unhealthy_workers() {
        let p = pool(3);
        assert_eq!(p.pick(None), None);
        p.set_healthy(0, true);
        p.set_healthy(2, true);
        let picked: Vec<usize> = (0..6)
            .filter_map(|_| p.pick(None))
            .map(|(i, _)| i)
            .collect();
        assert!(picked.iter().all(|i| *i != 1));
        assert!(picked.contains(&0) && picked.contains(&2));
    }

    #[test]
    fn sticky_worker_wins_while_healthy() {
        let p = pool(3);
        for i in 0..3 {
            p.set_healthy(i, true);
        }
        assert!((0..5).all(|_| p.pick(Some(2)).map(|(i, _)| i) == Some(2)));
        p.set_healthy(2, false);
        assert!(p.pick(Some(2)).is_some_and(|(i, _)| i != 2));
    }
}
