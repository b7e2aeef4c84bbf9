//! The binary's side of supervision. `btp up` hands the gateway a [`Launcher`] (this
//! executable and the configuration file), and the gateway's supervisor runs the workers
//! (`btp_gateway::supervisor`). A worker started that way finds its listening socket and
//! its readiness pipe in the environment ([`launch_from_env`]). The operator's side is the
//! pid file and `btp reload`, which signals the running process.

use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};

use anyhow::Context;
use btp_config::{Config, Source};
use btp_gateway::supervisor::{Launcher, LISTEN_FD_ENV, READY_FD_ENV};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// How the gateway starts workers: this executable, with the same configuration file.
pub fn launcher(source: &Source) -> anyhow::Result<Launcher> {
    let exe = std::env::current_exe().context("cannot find the btp executable")?;
    let config = match source {
        Source::Explicit(path) => Some(std::fs::canonicalize(path).unwrap_or(path.clone())),
        Source::Default => None,
    };
    Ok(Launcher { exe, config })
}

/// A worker started by the supervisor: its inherited socket, handoff channel and
/// readiness pipe. Without
/// the variables (a `btp api` started by hand) it binds its own address.
pub fn launch_from_env() -> anyhow::Result<btp_api::Launch> {
    let mut launch = btp_api::Launch::default();
    if let Some(fd) = inherited_fd(LISTEN_FD_ENV)? {
        // SAFETY: the supervisor cleared close-on-exec on this listening socket for us
        // alone; `inherited_fd` checked that it is open.
        launch.listener = Some(unsafe { std::net::TcpListener::from_raw_fd(fd) });
    }
    if let Some(fd) = inherited_fd(btp_handoff::FD_ENV)? {
        // SAFETY: the worker end of this slot's handoff channel, inherited for us alone;
        // `inherited_fd` checked that it is open.
        launch.handoff = Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    }
    if let Some(fd) = inherited_fd(READY_FD_ENV)? {
        launch.ready = Some(Box::new(move || {
            // SAFETY: the write end of the supervisor's readiness pipe, ours alone.
            let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
            if let Err(e) = pipe.write_all(b"ready\n") {
                tracing::warn!(error = %e, "could not tell the supervisor this worker is ready");
            }
        }));
    }
    Ok(launch)
}

fn inherited_fd(var: &str) -> anyhow::Result<Option<RawFd>> {
    let Ok(text) = std::env::var(var) else {
        return Ok(None);
    };
    let fd: RawFd = text
        .parse()
        .with_context(|| format!("{var}={text:?} is not a file descriptor"))?;
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        anyhow::bail!("{var}={fd} is not an open descriptor");
    }
    Ok(Some(fd))
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
