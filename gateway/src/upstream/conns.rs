//! Kept-alive connections to the API workers, shared by every request the gateway
//! forwards: per worker, newest first. A connection is not reused when its worker's
//! process was replaced (the pool's generation moved), when it has been idle longer than
//! [`IDLE_LIFETIME`], or when it is readable — the worker closed it (that check uses the
//! runtime's readiness, so the common case costs no system call).
//!
//! Idle connections are kept per gateway thread (shard, see `edge::listen`): a socket is
//! registered with the runtime of the thread that opened it, and taken again only by
//! that thread, so its readiness never has to cross threads. Threads that are not shards
//! share one more pool.
//!
//! Connections carrying a request are bounded per worker (`upstream_max_connections`):
//! a request beyond the bound waits for one to come back, up to the connect timeout,
//! rather than opening more. A burst of clients (640 HTTP/2 streams at once, in the
//! benchmark) then cannot overflow a worker's accept queue, and connections are reused
//! instead of churned: each shard keeps as many idle as may be busy.

use std::cell::Cell;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Pool, Refused};
use crate::metrics::Metrics;

/// A pooled connection idle for longer is closed rather than reused.
pub const IDLE_LIFETIME: Duration = Duration::from_secs(60);

thread_local! {
    /// The gateway thread (shard) this is, if it is one.
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Mark the calling thread as shard `shard`: its idle connections are its own.
pub fn enter_shard(shard: usize) {
    SHARD.with(|s| s.set(Some(shard)));
}

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
    /// Its place among the worker's busy connections, given back with it.
    _busy: OwnedSemaphorePermit,
}

pub struct Conns {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    /// Per shard (and one for other threads), per worker, newest last; at most
    /// `max_idle` each.
    idle: Box<[Mutex<Vec<Idle>>]>,
    shards: usize,
    /// `max_busy` for each shard. A place among the busy ones can pass from one shard
    /// to another (the semaphore is the worker's), and a shard opens a connection only
    /// when it has none idle; with a smaller cap, a shard that had more than its share
    /// busy would close the surplus on return while another opened new ones: under the
    /// benchmark's 640 HTTP/2 streams, a new connection for every third request. So a
    /// shard's connections, busy and idle, never exceed `max_busy`, and a worker sees at
    /// most `max_busy` per gateway thread.
    max_idle: usize,
    /// Per worker, the places of connections carrying a request.
    busy: Box<[Arc<Semaphore>]>,
}

impl Conns {
    /// `max_busy`: connections to one worker carrying a request at once (at least 1);
    /// `shards`: the gateway's threads.
    pub fn new(pool: Arc<Pool>, metrics: Arc<Metrics>, max_busy: usize, shards: usize) -> Conns {
        let max_busy = max_busy.clamp(1, Semaphore::MAX_PERMITS);
        let idle = (0..pool.len() * (shards + 1))
            .map(|_| Mutex::new(Vec::new()))
            .collect();
        let busy = (0..pool.len())
            .map(|_| Arc::new(Semaphore::new(max_busy)))
            .collect();
        Conns {
            pool,
            metrics,
            idle,
            shards,
            max_idle: max_busy,
            busy,
        }
    }

    /// The calling thread's idle connections to worker `index`.
    fn idle_slot(&self, index: usize) -> Option<&Mutex<Vec<Idle>>> {
        if index >= self.pool.len() {
            return None;
        }
        let shard = SHARD
            .with(Cell::get)
            .filter(|s| *s < self.shards)
            .unwrap_or(self.shards);
        self.idle.get(shard * self.pool.len() + index)
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A connection to the worker for `sticky` (or the next healthy one), once it has a
    /// place among its busy ones: a pooled one if there is one, else a new one. `fresh`:
    /// a new one, whatever the pool holds.
    pub async fn checkout(
        &self,
        sticky: Option<usize>,
        fresh: bool,
        connect_timeout: Duration,
    ) -> Result<Upstream, Refused> {
        let (index, _) = self.pool.pick(sticky).ok_or(Refused::NoneHealthy)?;
        let busy = self.place(index, connect_timeout).await?;
        if !fresh {
            if let Some(stream) = self.take_idle(index) {
                return Ok(Upstream {
                    index,
                    stream,
                    reused: true,
                    _busy: busy,
                });
            }
        }
        self.connect(index, busy, connect_timeout).await
    }

    /// A new connection in place of `up`'s (which the worker closed), on the same worker
    /// if it is still healthy; `up` keeps its place.
    pub async fn reconnect(
        &self,
        up: &mut Upstream,
        connect_timeout: Duration,
    ) -> Result<(), Refused> {
        let (connected, stream) = self
            .pool
            .connect(&self.metrics, Some(up.index), connect_timeout)
            .await?;
        if connected != up.index {
            // Another worker's place (a different count: nothing to wait on here).
            up._busy = self.place(connected, connect_timeout).await?;
            up.index = connected;
        }
        up.stream = stream;
        up.reused = false;
        Ok(())
    }

    async fn connect(
        &self,
        index: usize,
        busy: OwnedSemaphorePermit,
        connect_timeout: Duration,
    ) -> Result<Upstream, Refused> {
        let (connected, stream) = self
            .pool
            .connect(&self.metrics, Some(index), connect_timeout)
            .await?;
        // The connect went to another worker (this one failed): a place there instead.
        let busy = match connected == index {
            true => busy,
            false => {
                drop(busy);
                self.place(connected, connect_timeout).await?
            }
        };
        Ok(Upstream {
            index: connected,
            stream,
            reused: false,
            _busy: busy,
        })
    }

    /// A place among worker `index`'s busy connections, waited for up to `timeout`.
    async fn place(
        &self,
        index: usize,
        timeout: Duration,
    ) -> Result<OwnedSemaphorePermit, Refused> {
        let Some(places) = self.busy.get(index) else {
            return Err(Refused::NoneHealthy);
        };
        if let Ok(place) = places.clone().try_acquire_owned() {
            return Ok(place);
        }
        self.metrics.upstream_wait();
        match tokio::time::timeout(timeout, places.clone().acquire_owned()).await {
            Ok(Ok(place)) => Ok(place),
            // The semaphore is never closed.
            Ok(Err(_)) | Err(_) => {
                self.metrics.upstream_error("busy");
                Err(Refused::Busy)
            }
        }
    }

    fn take_idle(&self, index: usize) -> Option<TcpStream> {
        let slot = self.idle_slot(index)?;
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
        let Some(slot) = self.idle_slot(up.index) else {
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
            if idle.len() < self.max_idle {
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::mpsc;

    use super::*;

    /// On shard `shard`, in its own runtime: check out a connection to worker 0, say
    /// whether it was reused, and check it back in. The runtime lives while `go` has
    /// more turns, as a shard's does.
    fn shard(
        conns: Arc<Conns>,
        shard: usize,
        turns: usize,
    ) -> (mpsc::Sender<()>, mpsc::Receiver<bool>) {
        let (go, turn) = mpsc::channel::<()>();
        let (said, reused) = mpsc::channel();
        std::thread::spawn(move || {
            enter_shard(shard);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            for _ in 0..turns {
                if turn.recv().is_err() {
                    return;
                }
                let up = runtime
                    .block_on(conns.checkout(None, false, Duration::from_secs(2)))
                    .unwrap_or_else(|e| panic!("checkout: {e:?}"));
                let _ = said.send(up.reused);
                conns.check_in(up);
            }
        });
        (go, reused)
    }

    /// Connections, four busy at most, for two shards, to a worker that accepts and stays
    /// silent (so its connections stay reusable); the worker lives as long as the listener.
    fn to_a_silent_worker() -> (Conns, std::net::TcpListener) {
        let worker = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr: SocketAddr = worker.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let pool = Arc::new(Pool::new(vec![addr]));
        pool.set_healthy(0, true);
        let metrics = Arc::new(Metrics::new().unwrap_or_else(|e| panic!("{e}")));
        (Conns::new(pool, metrics, 4, 2), worker)
    }

    #[test]
    fn idle_connections_are_kept_per_shard() {
        let (conns, worker) = to_a_silent_worker();
        let conns = Arc::new(conns);

        let (go0, reused0) = shard(conns.clone(), 0, 2);
        let (go1, reused1) = shard(conns.clone(), 1, 2);
        let next = |go: &mpsc::Sender<()>, reused: &mpsc::Receiver<bool>| {
            go.send(()).unwrap_or_else(|e| panic!("{e}"));
            reused
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        // Each shard opens its own and then reuses its own, never the other's (which is
        // registered with the other thread's runtime).
        assert!(!next(&go0, &reused0), "shard 0's first connection is new");
        assert!(
            !next(&go1, &reused1),
            "shard 1 does not take shard 0's idle one"
        );
        assert!(next(&go0, &reused0), "shard 0 reuses its own");
        assert!(next(&go1, &reused1), "shard 1 reuses its own");
        drop(worker);
    }

    #[test]
    fn a_shard_keeps_as_many_idle_as_may_be_busy() {
        // Four places for two shards: all four may be busy on shard 0 at once.
        let (conns, worker) = to_a_silent_worker();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        std::thread::scope(|s| {
            s.spawn(|| {
                enter_shard(0);
                let burst = |conns: &Conns| {
                    let ups: Vec<Upstream> = (0..4)
                        .map(|_| {
                            runtime
                                .block_on(conns.checkout(None, false, Duration::from_secs(2)))
                                .unwrap_or_else(|e| panic!("checkout: {e:?}"))
                        })
                        .collect();
                    let reused = ups.iter().filter(|u| u.reused).count();
                    for up in ups {
                        conns.check_in(up);
                    }
                    reused
                };
                assert_eq!(burst(&conns), 0);
                // Every one came back idle: none was closed for a per-shard share.
                assert_eq!(burst(&conns), 4);
            });
        });
        drop(worker);
    }
}
