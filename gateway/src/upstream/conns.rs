//! Kept-alive connections to the API workers, shared by every request the gateway
//! forwards: per worker, newest first. A connection is not reused when its worker's
//! process was replaced (the pool's generation moved), when it has been idle longer than
//! [`IDLE_LIFETIME`], or when it is readable — the worker closed it (that check uses the
//! runtime's readiness, so the common case costs no system call).

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{Pool, Refused};
use crate::metrics::Metrics;

/// Idle connections kept per worker; more are closed when given back.
const MAX_IDLE: usize = 256;

/// A pooled connection idle for longer is closed rather than reused.
pub const IDLE_LIFETIME: Duration = Duration::from_secs(60);

struct Idle {
    stream: TcpStream,
    generation: u64,
    since: Instant,
}

/// A connection to a worker for one exchange.
pub struct Upstream {
    pub index: usize,
    pub stream: TcpStream,
    /// Taken from the pool: the worker may have closed it an instant ago, so a request
    /// that finds it closed before any answer may be sent again on a new one.
    pub reused: bool,
}

pub struct Conns {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// Per worker, newest last.
    idle: Box<[Mutex<Vec<Idle>>]>,
}

impl Conns {
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>) -> Conns {
        let idle = (0..pool.len()).map(|_| Mutex::new(Vec::new())).collect();
        Conns {
            pool,
            metrics,
            idle,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A connection to the worker for `sticky` (or the next healthy one): a pooled one if
    /// there is one, else a new one. `fresh`: a new one, whatever the pool holds.
    pub async fn checkout(
        &self,
        sticky: Option<usize>,
        fresh: bool,
        connect_timeout: Duration,
    ) -> Result<Upstream, Refused> {
        let (index, _) = self.pool.pick(sticky).ok_or(Refused::NoneHealthy)?;
        if !fresh {
            if let Some(stream) = self.take_idle(index) {
                return Ok(Upstream {
                    index,
                    stream,
                    reused: true,
                });
            }
        }
        let (index, stream) = self
            .pool
            .connect(&self.metrics, Some(index), connect_timeout)
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

    /// Give a connection back after an exchange that left it ready for another.
    pub fn check_in(&self, up: Upstream) {
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
}

/// Nothing to read on a pooled connection: the worker has not closed it (a closed one is
/// readable, its end of stream pending).
fn quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
