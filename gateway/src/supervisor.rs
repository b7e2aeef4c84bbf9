//! What pm2 did, as a Pingora service of `btp up`: run `api.workers` API processes (this
//! same binary as `btp api --worker i`), restart one that dies with exponential backoff,
//! replace them one at a time on demand (a rolling restart, gated on the replacement being
//! ready), stop them at once when the gateway shuts down, and hand their sockets over in a
//! binary upgrade.
//!
//! The supervisor owns each worker's listening socket and lends it to the worker process
//! (`BTP_LISTEN_FD`). A worker and its replacement therefore accept from one and the same
//! queue: while one stops and the other starts, a connection waits in that queue instead
//! of being refused, so neither a rolling restart nor a crash turns into failed requests
//! at the gateway. The sockets sit in Pingora's table of listening descriptors under
//! `btp-api/<addr>`, so a graceful upgrade (`--upgrade` + SIGQUIT) passes them to the new
//! process with the public listeners, and the new process's workers serve the same queue
//! while the old ones drain.
//!
//! Before a worker is stopped, the gateway's pooled keep-alive connections to its slot
//! are retired ([`Pool::retire_connections`]): a request is never written on a connection
//! the draining worker is closing, which no proxy could safely retry for a POST.
//!
//! Each slot also has a handoff channel (`btp_handoff`): the gateway keeps its sending
//! end in the [`Pool`], and the receiving end is lent to every process of the slot
//! (`BTP_HANDOFF_FD`) the way the listening socket is, so WebSocket connections handed to
//! the slot while its worker is replaced wait in the channel's queue.
//!
//! A worker tells it is serving by writing to a pipe (`BTP_READY_FD`) once its database
//! is open; that is the health gate of a replacement (a probe of the shared socket could
//! be answered by the old worker). Children run from a dedicated thread because their
//! parent-death signal follows the thread that spawned them: a `kill -9` of the gateway
//! leaves no orphan holding the sockets.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use prometheus::{IntCounterVec, Opts};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::upstream::Pool;

/// The environment variable naming the inherited listening socket of a worker.
pub const LISTEN_FD_ENV: &str = "BTP_LISTEN_FD";
/// The environment variable naming the pipe a worker writes to once it serves.
pub const READY_FD_ENV: &str = "BTP_READY_FD";

/// First restart delay; doubles per consecutive crash up to `api.restart_backoff_max_ms`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// A worker that stayed up this long is healthy again: its next crash restarts fast.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a replacement may take to open its database and start serving.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopping worker may take to close its sessions and finish its requests
/// before it is killed.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Half the API worker's settle time: see [`stop`].
const RETIRE_AGAIN_AFTER: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("api.listen gives no worker address")]
    NoWorkers,
    #[error("worker restart metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("worker handoff channel: {0}")]
    Handoff(#[from] std::io::Error),
}

/// How to start a worker: this binary, with the configuration file the gateway read.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub exe: PathBuf,
    /// `--config` for the workers; `None` lets them find `config.toml` as `btp up` did.
    pub config: Option<PathBuf>,
}

/// A handle to ask the running supervisor for a rolling restart.
#[derive(Debug, Clone)]
pub struct Control {
    requests: mpsc::UnboundedSender<()>,
}

impl Control {
    /// Replace every worker, one at a time. Requests made while one runs are coalesced
    /// into one more round, so a reload during a rolling restart still takes effect.
    pub fn rolling_restart(&self) {
        let _ = self.requests.send(());
    }
}

#[derive(Clone)]
struct Counters {
    restarts: IntCounterVec,
    rolling: IntCounterVec,
}

/// The Pingora service. Add it to the server of `btp up`.
pub struct Supervisor {
    launcher: Launcher,
    pool: Arc<Pool>,
    addrs: Vec<SocketAddr>,
    /// The workers' ends of the slots' handoff channels.
    handoffs: Vec<Arc<OwnedFd>>,
    backoff_max: Duration,
    counters: Counters,
    requests: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
}

impl Supervisor {
    /// A supervisor for the workers of `config`, its counters registered in `metrics`.
    pub fn new(
        launcher: Launcher,
        pool: Arc<Pool>,
        config: &btp_config::Config,
        metrics: &Metrics,
    ) -> Result<(Supervisor, Control), SupervisorError> {
        let addrs = config.api_worker_addrs();
        if addrs.is_empty() {
            return Err(SupervisorError::NoWorkers);
        }
        let restarts = IntCounterVec::new(
            Opts::new(
                "btp_gateway_worker_restarts_total",
                "API worker processes restarted after they exited on their own (crash, kill).",
            ),
            &["worker"],
        )?;
        let rolling = IntCounterVec::new(
            Opts::new(
                "btp_gateway_rolling_restarts_total",
                "Rolling restarts of the API workers, by result.",
            ),
            &["result"],
        )?;
        for i in 0..addrs.len() {
            restarts.with_label_values(&[i.to_string().as_str()]);
        }
        for result in ["ok", "failed"] {
            rolling.with_label_values(&[result]);
        }
        metrics.register(Box::new(restarts.clone()))?;
        metrics.register(Box::new(rolling.clone()))?;
        let mut handoffs = Vec::with_capacity(addrs.len());
        for index in 0..addrs.len() {
            let (sender, theirs) = btp_handoff::channel()?;
            pool.set_handoff(index, sender);
            handoffs.push(Arc::new(theirs));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            launcher,
            pool,
            addrs,
            handoffs,
            backoff_max: Duration::from_millis(config.api.restart_backoff_max_ms),
            counters: Counters { restarts, rolling },
            requests: Mutex::new(Some(rx)),
        };
        Ok((supervisor, Control { requests: tx }))
    }

    fn fd_key(addr: SocketAddr) -> String {
        format!("btp-api/{addr}")
    }

    /// The worker sockets: inherited from the previous process in an upgrade, else bound
    /// now; either way recorded in Pingora's table for the next upgrade.
    fn listeners(
        &self,
        fds: Option<&ListenFds>,
    ) -> std::io::Result<Vec<Arc<std::net::TcpListener>>> {
        let mut out = Vec::with_capacity(self.addrs.len());
        for addr in &self.addrs {
            let key = Self::fd_key(*addr);
            let inherited = fds.and_then(|fds| fds.lock().get(&key).copied());
            let listener = match inherited {
                Some(fd) => {
                    tracing::info!(%addr, "[SUPERVISOR] SOCKET_INHERITED");
                    // SAFETY: the descriptor arrived from the previous process through
                    // Pingora's upgrade socket under our key; nothing else here owns it.
                    unsafe { std::net::TcpListener::from_raw_fd(fd) }
                }
                None => {
                    let listener = bind(*addr)?;
                    if let Some(fds) = fds {
                        fds.lock().add(key, listener.as_raw_fd());
                    }
                    listener
                }
            };
            out.push(Arc::new(listener));
        }
        Ok(out)
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    crate::edge::listen::bind(addr, btp_config::API_WORKER_BACKLOG)
}

#[async_trait]
impl ServiceWithDependents for Supervisor {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        ready_notifier.notify_ready();
        let listeners = match self.listeners(fds.as_ref()) {
            Ok(listeners) => listeners,
            Err(e) => {
                // Without its workers the gateway can only answer 503s; say why and stop.
                tracing::error!(error = %e, "[SUPERVISOR] cannot listen on the API worker addresses");
                std::process::exit(1);
            }
        };
        let requests = self
            .requests
            .lock()
            .ok()
            .and_then(|mut r| r.take())
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let slots: Vec<Slot> = listeners
            .into_iter()
            .zip(self.handoffs.iter().cloned())
            .enumerate()
            .map(|(index, (listener, handoff))| Slot {
                index,
                listener,
                handoff,
                launcher: self.launcher.clone(),
                pool: self.pool.clone(),
                counters: self.counters.clone(),
                backoff_max: self.backoff_max,
            })
            .collect();
        let rolling = self.counters.rolling.clone();
        let (done_tx, done_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("btp-supervisor".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "[SUPERVISOR] cannot start its runtime");
                        std::process::exit(1);
                    }
                };
                runtime.block_on(supervise(slots, requests, shutdown, rolling));
                let _ = done_tx.send(());
            });
        if let Err(e) = thread {
            tracing::error!(error = %e, "[SUPERVISOR] cannot start its thread");
            std::process::exit(1);
        }
        // Returning lets Pingora consider the service finished: wait until the workers
        // are stopped (or Pingora's own shutdown timeout ends the wait).
        let _ = done_rx.await;
    }

    fn name(&self) -> &str {
        "btp supervisor"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        // Claims the worker sockets in an upgrade, so Pingora keeps them open for us.
        Some(self.addrs.iter().map(|a| Self::fd_key(*a)).collect())
    }
}

/// Run every slot and the rolling-restart coordinator until shutdown.
async fn supervise(
    slots: Vec<Slot>,
    mut requests: mpsc::UnboundedReceiver<()>,
    shutdown: ShutdownWatch,
    rolling: IntCounterVec,
) {
    let mut replace = Vec::with_capacity(slots.len());
    let mut tasks = Vec::with_capacity(slots.len());
    for slot in slots {
        let (tx, rx) = mpsc::unbounded_channel();
        replace.push(tx);
        tasks.push(tokio::spawn(slot.run(rx, shutdown.clone())));
    }
    let mut stop = shutdown.clone();
    loop {
        let asked = tokio::select! {
            request = requests.recv() => request.is_some(),
            _ = stop.wait_for(|s| *s) => break,
        };
        if !asked {
            // Nobody can ask any more: only shutdown is left to wait for.
            let _ = stop.wait_for(|s| *s).await;
            break;
        }
        while requests.try_recv().is_ok() {}
        let ok = rolling_restart(&replace).await;
        rolling
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }
    futures::future::join_all(tasks).await;
}

/// Replace the workers one at a time; stop at the first that fails its health gate,
/// keeping the workers that still run.
async fn rolling_restart(slots: &[mpsc::UnboundedSender<oneshot::Sender<bool>>]) -> bool {
    tracing::info!(workers = slots.len(), "[SUPERVISOR] ROLLING_RESTART_START");
    let started = Instant::now();
    for (worker, slot) in slots.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        let replaced = slot.send(tx).is_ok() && rx.await.unwrap_or(false);
        if !replaced {
            tracing::error!(
                worker,
                "[SUPERVISOR] ROLLING_RESTART_FAILED: the replacement did not become ready; the running workers are kept"
            );
            return false;
        }
    }
    tracing::info!(
        workers = slots.len(),
        duration_ms = started.elapsed().as_millis() as u64,
        "[SUPERVISOR] ROLLING_RESTART_DONE"
    );
    true
}

/// One worker position: its socket, and whichever process currently serves it.
struct Slot {
    index: usize,
    listener: Arc<std::net::TcpListener>,
    /// The workers' end of the slot's handoff channel.
    handoff: Arc<OwnedFd>,
    launcher: Launcher,
    pool: Arc<Pool>,
    counters: Counters,
    backoff_max: Duration,
}

/// A running worker process.
struct Worker {
    child: Child,
    pid: u32,
    started: Instant,
    /// Read end of the readiness pipe, until someone waits on it.
    ready: Option<pipe::Receiver>,
}

enum Event {
    Exited(std::io::Result<ExitStatus>),
    Replace(oneshot::Sender<bool>),
    Shutdown,
}

impl Slot {
    async fn run(
        self,
        mut replace: mpsc::UnboundedReceiver<oneshot::Sender<bool>>,
        mut shutdown: ShutdownWatch,
    ) {
        let mut backoff = FIRST_BACKOFF;
        let mut current: Option<Worker> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let mut worker = match current.take() {
                Some(worker) => worker,
                None => match self.spawn() {
                    Ok(mut worker) => {
                        if let Some(ready) = worker.ready.take() {
                            tokio::spawn(log_ready(self.index, worker.pid, ready));
                        }
                        worker
                    }
                    Err(e) => {
                        tracing::error!(worker = self.index, error = %e, restart_in_ms = backoff.as_millis() as u64, "[SUPERVISOR] WORKER_SPAWN_FAILED");
                        if !pause(backoff, &mut shutdown).await {
                            break;
                        }
                        backoff = (backoff * 2).min(self.backoff_max);
                        continue;
                    }
                },
            };
            let event = tokio::select! {
                status = worker.child.wait() => Event::Exited(status),
                Some(reply) = replace.recv() => Event::Replace(reply),
                _ = shutdown.wait_for(|s| *s) => Event::Shutdown,
            };
            match event {
                Event::Exited(status) => {
                    self.pool.retire_connections(self.index);
                    if *shutdown.borrow() {
                        break;
                    }
                    if worker.started.elapsed() >= STABLE_AFTER {
                        backoff = FIRST_BACKOFF;
                    }
                    self.counters
                        .restarts
                        .with_label_values(&[self.index.to_string().as_str()])
                        .inc();
                    tracing::error!(
                        worker = self.index,
                        pid = worker.pid,
                        status = %describe(&status),
                        restart_in_ms = backoff.as_millis() as u64,
                        "[SUPERVISOR] WORKER_EXITED, restarting"
                    );
                    if !pause(backoff, &mut shutdown).await {
                        break;
                    }
                    backoff = (backoff * 2).min(self.backoff_max);
                }
                Event::Replace(reply) => match self.replacement(&mut shutdown).await {
                    Some(next) => {
                        tracing::info!(
                            worker = self.index,
                            old = worker.pid,
                            new = next.pid,
                            "[SUPERVISOR] WORKER_REPLACED, draining the old one"
                        );
                        current = Some(next);
                        stop(self.index, worker, Some(&self.pool)).await;
                        let _ = reply.send(true);
                    }
                    None => {
                        current = Some(worker);
                        let _ = reply.send(false);
                    }
                },
                Event::Shutdown => {
                    current = Some(worker);
                    break;
                }
            }
        }
        if let Some(worker) = current {
            stop(self.index, worker, Some(&self.pool)).await;
        }
    }

    /// Start a second process on this slot's socket and wait until it serves. `None` if
    /// it exits, stays silent past [`READY_LIMIT`] or shutdown begins; it is stopped then.
    async fn replacement(&self, shutdown: &mut ShutdownWatch) -> Option<Worker> {
        let mut next = match self.spawn() {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(worker = self.index, error = %e, "[SUPERVISOR] WORKER_SPAWN_FAILED");
                return None;
            }
        };
        let mut ready = next.ready.take()?;
        let started = Instant::now();
        let became_ready = tokio::select! {
            ok = tokio::time::timeout(READY_LIMIT, wait_ready(&mut ready)) => matches!(ok, Ok(true)),
            _ = shutdown.wait_for(|s| *s) => false,
        };
        if became_ready {
            tracing::info!(
                worker = self.index,
                pid = next.pid,
                ready_ms = started.elapsed().as_millis() as u64,
                "[SUPERVISOR] WORKER_READY"
            );
            return Some(next);
        }
        tracing::error!(
            worker = self.index,
            pid = next.pid,
            "[SUPERVISOR] WORKER_NOT_READY, stopping the replacement"
        );
        stop(self.index, next, None).await;
        None
    }

    fn spawn(&self) -> std::io::Result<Worker> {
        let (ready_tx, ready_rx) = pipe::pipe()?;
        let ready_fd = ready_tx.into_blocking_fd()?;
        let listen_raw = self.listener.as_raw_fd();
        let ready_raw = ready_fd.as_raw_fd();
        let handoff_raw = self.handoff.as_raw_fd();
        let mut cmd = Command::new(&self.launcher.exe);
        if let Some(config) = &self.launcher.config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("api")
            .arg("--worker")
            .arg(self.index.to_string())
            .env(LISTEN_FD_ENV, listen_raw.to_string())
            .env(READY_FD_ENV, ready_raw.to_string())
            .env(btp_handoff::FD_ENV, handoff_raw.to_string())
            .stdin(Stdio::null());
        // SAFETY: only async-signal-safe calls (prctl, fcntl, signal) on the child's own
        // state between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                inherit(listen_raw)?;
                inherit(ready_raw)?;
                inherit(handoff_raw)?;
                // The gateway ignores these until its handlers are installed; a worker
                // must not inherit "ignored".
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                libc::signal(libc::SIGUSR2, libc::SIG_DFL);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // Only the child holds the write end now: its exit is an end-of-file here.
        drop(ready_fd);
        let pid = child.id().unwrap_or_default();
        tracing::info!(worker = self.index, pid, "[SUPERVISOR] WORKER_STARTED");
        Ok(Worker {
            child,
            pid,
            started: Instant::now(),
            ready: Some(ready_rx),
        })
    }
}

/// Let `fd` survive `exec` in the child.
fn inherit(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor number; fails cleanly if it is not open.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sleep, unless shutdown begins first (then `false`).
async fn pause(delay: Duration, shutdown: &mut ShutdownWatch) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

async fn wait_ready(ready: &mut pipe::Receiver) -> bool {
    let mut buf = [0u8; 16];
    matches!(ready.read(&mut buf).await, Ok(n) if n > 0)
}

async fn log_ready(worker: usize, pid: u32, mut ready: pipe::Receiver) {
    if wait_ready(&mut ready).await {
        tracing::info!(worker, pid, "[SUPERVISOR] WORKER_READY");
    }
}

/// SIGTERM (the worker stops accepting and closes its sessions in order), then wait for
/// it to drain; SIGKILL past [`DRAIN_LIMIT`]. With the pool, the gateway's keep-alive
/// connections to the worker are retired first, and again within the worker's settle
/// time (`btp_api::server::SETTLE`, 300 ms) to cover those it accepted just before it
/// stopped accepting: it closes idle connections only once that time is over.
async fn stop(index: usize, mut worker: Worker, pool: Option<&Pool>) {
    if let Some(pool) = pool {
        pool.retire_connections(index);
    }
    if let Ok(pid) = i32::try_from(worker.pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    if let Some(pool) = pool {
        tokio::time::sleep(RETIRE_AGAIN_AFTER).await;
        pool.retire_connections(index);
    }
    match tokio::time::timeout(DRAIN_LIMIT, worker.child.wait()).await {
        Ok(status) => tracing::info!(
            worker = index,
            pid = worker.pid,
            status = %describe(&status),
            "[SUPERVISOR] WORKER_STOPPED"
        ),
        Err(_) => {
            tracing::warn!(
                worker = index,
                pid = worker.pid,
                "[SUPERVISOR] WORKER_KILLED: still draining after {DRAIN_LIMIT:?}"
            );
            let _ = worker.child.kill().await;
        }
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            _ => s.to_string(),
        },
        Err(e) => format!("wait failed: {e}"),
    }
}
