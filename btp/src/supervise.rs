//! What pm2 did, inside `btp up`: run `api.workers` API processes (this same binary as
//! `btp api --worker i`), restart one that dies with exponential backoff, and make sure
//! none outlives the gateway. Children are tied to this process with a parent-death
//! signal, so even a `kill -9` of the gateway leaves no orphan holding the API ports.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use btp_config::{Config, Source};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// First restart delay; doubles per consecutive crash up to `api.restart_backoff_max_ms`.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// A worker that stayed up this long is healthy again: its next crash restarts fast.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Restarts performed since start, across workers.
pub static RESTARTS: AtomicU64 = AtomicU64::new(0);

/// Start the supervisor thread with one watch loop per worker.
pub fn spawn_workers(config: &Config, source: &Source) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the btp executable")?;
    let config_arg = match source {
        Source::Explicit(path) => Some(std::fs::canonicalize(path).unwrap_or(path.clone())),
        Source::Default => None,
    };
    let workers = config.api.workers;
    let backoff_max = Duration::from_millis(config.api.restart_backoff_max_ms);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the supervisor runtime")?;
    std::thread::Builder::new()
        .name("btp-supervisor".into())
        .spawn(move || {
            // The children's parent-death signal is tied to this thread: it must live as
            // long as the process, which it does by never leaving this block_on.
            runtime.block_on(async move {
                let loops = (0..workers).map(|worker| {
                    let spec = WorkerSpec {
                        exe: exe.clone(),
                        config: config_arg.clone(),
                        worker,
                    };
                    tokio::spawn(watch(spec, backoff_max))
                });
                futures::future::join_all(loops).await;
            })
        })
        .context("cannot start the supervisor thread")?;
    Ok(())
}

struct WorkerSpec {
    exe: PathBuf,
    config: Option<PathBuf>,
    worker: u16,
}

impl WorkerSpec {
    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.exe);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.arg("api").arg("--worker").arg(self.worker.to_string());
        cmd.stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

async fn watch(spec: WorkerSpec, backoff_max: Duration) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let status = match spec.command().spawn() {
            Ok(mut child) => {
                tracing::info!(worker = spec.worker, pid = child.id(), "api worker started");
                child.wait().await
            }
            Err(e) => Err(e),
        };
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        match status {
            Ok(status) => tracing::error!(worker = spec.worker, %status, restart_in_ms = backoff.as_millis() as u64, "api worker exited"),
            Err(e) => tracing::error!(worker = spec.worker, error = %e, restart_in_ms = backoff.as_millis() as u64, "api worker could not be started"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(backoff_max);
        RESTARTS.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn write_pid_file(config: &Config) -> anyhow::Result<()> {
    let path = config.resolve(&config.gateway.pid_file);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write pid file {}", path.display()))
}

/// `btp reload`: validate the configuration here first (so the operator sees problems
/// at once), then signal the running process, which validates again before applying.
pub fn signal_running(source: &Source, signal: Signal) -> anyhow::Result<()> {
    let config = btp_config::load(source).map_err(|problems| {
        anyhow::anyhow!("not reloading, the configuration is invalid:\n{problems}")
    })?;
    let path = config.resolve(&config.gateway.pid_file);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no running btp: cannot read {}", path.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .with_context(|| format!("{} does not hold a pid", path.display()))?;
    nix::sys::signal::kill(Pid::from_raw(pid), signal)
        .with_context(|| format!("cannot signal pid {pid} (from {})", path.display()))?;
    println!("sent {signal} to btp (pid {pid})");
    Ok(())
}
