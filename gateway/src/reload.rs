//! Reload without dropping anything, like `nginx -s reload` but validated first: SIGHUP
//! (what `btp reload` sends) re-reads `config.toml` and `static/`; SIGUSR2 does the same
//! and then replaces every API worker, one at a time (`btp reload --restart-workers`).
//!
//! What the request path reads lives in one [`Snapshot`] (derived settings and the static
//! store, [`crate::live`]) behind an atomic pointer. A request takes the snapshot once, when it starts, and
//! keeps it to its end, so a reload never changes the rules under a request in flight, and
//! an upgraded WebSocket tunnel keeps running on the snapshot it started with; the next
//! request sees the new one. Nothing is swapped unless the whole new configuration and the
//! whole static tree loaded: an invalid file is reported line by line (`FILE:LINE:COL:
//! message`, as `btp check` prints it), counted, and the running configuration stays.
//!
//! Keys the gateway cannot change in place are sorted by [`plan`]: the API workers' keys
//! (database, realtime heartbeat, sync, auth, CORS origins, log) take effect through a
//! rolling restart; listener addresses, TLS files and the worker count need a new process
//! (`btp up --upgrade`, then SIGQUIT to the old one), which is logged as such.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use btp_config::{Config, Source};
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};
use prometheus::{IntCounterVec, Opts};

use crate::assets::Store;
use crate::config::Settings;
use crate::live::{Live, Snapshot};
use crate::metrics::Metrics;
use crate::supervisor::Control;
use crate::tls::{self, Certificate};

/// Where a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// At once, for every request that starts after the reload.
    Live,
    /// After a rolling restart of the API workers (they read the file when they start).
    Workers,
    /// Only in a new gateway process (a graceful upgrade or a restart).
    NewProcess,
}

/// The changed keys of a reload, each with where it takes effect.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<(&'static str, Effect)>,
}

impl Plan {
    fn keys(&self, effect: Effect) -> Vec<&'static str> {
        self.changes
            .iter()
            .filter(|(_, e)| *e == effect)
            .map(|(k, _)| *k)
            .collect()
    }

    pub fn restarts_workers(&self) -> bool {
        self.changes.iter().any(|(_, e)| *e == Effect::Workers)
    }
}

/// Compare the running configuration with a new one (pure).
pub fn plan(old: &Config, new: &Config) -> Plan {
    use Effect::*;
    let (a, b) = (&old.gateway, &new.gateway);
    let checks: [(bool, &'static str, Effect); 33] = [
        (a.listen != b.listen, "gateway.listen", NewProcess),
        (
            a.admin_listen != b.admin_listen,
            "gateway.admin_listen",
            NewProcess,
        ),
        (
            a.tls_listen != b.tls_listen,
            "gateway.tls_listen",
            NewProcess,
        ),
        (a.tls_cert != b.tls_cert, "gateway.tls_cert", Live),
        (a.tls_key != b.tls_key, "gateway.tls_key", Live),
        (a.pid_file != b.pid_file, "gateway.pid_file", NewProcess),
        (a.threads != b.threads, "gateway.threads", NewProcess),
        (
            a.redirect_http != b.redirect_http,
            "gateway.redirect_http",
            Live,
        ),
        (
            a.trusted_proxies != b.trusted_proxies,
            "gateway.trusted_proxies",
            Live,
        ),
        (
            a.max_body_bytes != b.max_body_bytes,
            "gateway.max_body_bytes",
            Live,
        ),
        (
            a.header_timeout_ms != b.header_timeout_ms,
            "gateway.header_timeout_ms",
            Live,
        ),
        (
            a.upstream_connect_timeout_ms != b.upstream_connect_timeout_ms,
            "gateway.upstream_connect_timeout_ms",
            Live,
        ),
        (
            a.upstream_read_timeout_ms != b.upstream_read_timeout_ms,
            "gateway.upstream_read_timeout_ms",
            Live,
        ),
        (
            a.health_check_interval_ms != b.health_check_interval_ms,
            "gateway.health_check_interval_ms",
            Live,
        ),
        (a.public_url != b.public_url, "gateway.public_url", Live),
        // The ACME client is set up at start: a change of names, authority or contact
        // is a new client.
        (
            a.acme_domains != b.acme_domains
                || a.acme_email != b.acme_email
                || a.acme_directory != b.acme_directory
                || a.acme_ca_roots != b.acme_ca_roots
                || a.acme_challenge != b.acme_challenge,
            "gateway.acme_*",
            NewProcess,
        ),
        (
            a.websocket_handoff != b.websocket_handoff,
            "gateway.websocket_handoff",
            Live,
        ),
        (
            a.keepalive_timeout_ms != b.keepalive_timeout_ms,
            "gateway.keepalive_timeout_ms",
            Live,
        ),
        (
            a.body_timeout_ms != b.body_timeout_ms,
            "gateway.body_timeout_ms",
            Live,
        ),
        (
            a.max_header_bytes != b.max_header_bytes,
            "gateway.max_header_bytes",
            Live,
        ),
        (
            a.max_connections != b.max_connections,
            "gateway.max_connections",
            Live,
        ),
        (
            a.max_connections_per_ip != b.max_connections_per_ip,
            "gateway.max_connections_per_ip",
            Live,
        ),
        (
            a.upstream_max_connections != b.upstream_max_connections,
            "gateway.upstream_max_connections",
            NewProcess,
        ),
        (old.static_files != new.static_files, "static.root", Live),
        (old.api.listen != new.api.listen, "api.listen", NewProcess),
        (
            old.api.workers != new.api.workers,
            "api.workers",
            NewProcess,
        ),
        (
            old.api.restart_backoff_max_ms != new.api.restart_backoff_max_ms,
            "api.restart_backoff_max_ms",
            NewProcess,
        ),
        (
            old.api.cors_origins != new.api.cors_origins,
            "api.cors_origins",
            Workers,
        ),
        (old.database != new.database, "database", Workers),
        // The heartbeat is both: the gateway's derived tunnel timeouts and /config.json
        // change at once, the workers' Engine.IO timers with their restart.
        (old.realtime != new.realtime, "realtime", Workers),
        (old.sync != new.sync, "sync", Workers),
        (old.auth != new.auth, "auth", Workers),
        (old.log != new.log, "log", Workers),
    ];
    Plan {
        changes: checks
            .into_iter()
            .filter(|(changed, _, _)| *changed)
            .map(|(_, key, effect)| (key, effect))
            .collect(),
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(btp_config::Problems),
    #[error("{0}")]
    Settings(#[from] crate::config::SettingsError),
    #[error("{0}")]
    Static(#[from] crate::assets::AssetError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Applies reloads; one per gateway process.
pub struct Reloader {
    source: Source,
    live: Live,
    /// What the TLS listener presents, when there is one: re-read by every reload.
    certificate: Option<Arc<Certificate>>,
    running: Mutex<Config>,
    supervisor: Option<Control>,
    reloads: IntCounterVec,
}

impl Reloader {
    pub fn new(
        source: Source,
        running: Config,
        live: Live,
        certificate: Option<Arc<Certificate>>,
        supervisor: Option<Control>,
        metrics: &Metrics,
    ) -> Result<Reloader, prometheus::Error> {
        let reloads = IntCounterVec::new(
            Opts::new(
                "btp_gateway_reloads_total",
                "Configuration reloads (SIGHUP, btp reload), by result.",
            ),
            &["result"],
        )?;
        for result in ["ok", "failed"] {
            reloads.with_label_values(&[result]);
        }
        metrics.register(Box::new(reloads.clone()))?;
        Ok(Reloader {
            source,
            live,
            certificate,
            running: Mutex::new(running),
            supervisor,
            reloads,
        })
    }

    /// Re-read and apply; with `restart_workers`, also replace every API worker. An
    /// invalid configuration changes nothing (and starts no worker that would read it).
    pub fn reload(&self, restart_workers: bool) -> Result<Plan, ReloadError> {
        match self.try_reload() {
            Ok(plan) => {
                self.reloads.with_label_values(&["ok"]).inc();
                let live = plan.keys(Effect::Live);
                let workers = plan.keys(Effect::Workers);
                let process = plan.keys(Effect::NewProcess);
                tracing::info!(
                    live = ?live,
                    workers = ?workers,
                    "[RELOAD] APPLIED: static files reloaded, configuration swapped"
                );
                if !process.is_empty() {
                    tracing::warn!(
                        keys = ?process,
                        "[RELOAD] these keys need a restart: run `btp up --upgrade` and send SIGQUIT to this process (no connection is dropped); until then the old values stay in effect"
                    );
                }
                if restart_workers || plan.restarts_workers() {
                    match &self.supervisor {
                        Some(control) => control.rolling_restart(),
                        None => tracing::warn!(
                            keys = ?workers,
                            "[RELOAD] the API workers are not supervised by this process: restart them to apply these keys"
                        ),
                    }
                }
                Ok(plan)
            }
            Err(e) => {
                self.reloads.with_label_values(&["failed"]).inc();
                if let ReloadError::Config(problems) = &e {
                    for problem in &problems.0 {
                        tracing::error!("{problem}");
                    }
                } else {
                    tracing::error!("{e}");
                }
                tracing::error!(
                    "[RELOAD] FAILED: keeping the running configuration{}",
                    if restart_workers {
                        "; the API workers were not restarted"
                    } else {
                        ""
                    }
                );
                Err(e)
            }
        }
    }

    /// Everything is read and checked before anything is applied: a configuration, a
    /// static file or a certificate that fails leaves the running ones in place.
    fn try_reload(&self) -> Result<Plan, ReloadError> {
        let config = btp_config::load(&self.source).map_err(ReloadError::Config)?;
        let settings = Settings::from_config(&config)?;
        let store = Store::load(&settings.static_root)?;
        // The certificate files are read again even when their paths did not change: a
        // renewal (certbot's deploy hook) replaces them in place.
        // With ACME the certificate is the ACME client's, not these files'.
        let certificate = match (&self.certificate, settings.tls_listen, &settings.acme) {
            (Some(current), Some(_), None) => {
                Some((current, tls::load(&settings.tls_cert, &settings.tls_key)?))
            }
            _ => None,
        };
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let plan = plan(&running, &config);
        let challenges = self.live.load().challenges.clone();
        self.live.store(Arc::new(Snapshot::new(
            Arc::new(settings),
            Arc::new(store),
            challenges,
        )));
        if let Some((current, loaded)) = certificate {
            tracing::info!("[RELOAD] certificate: {}", loaded.describe());
            current.swap(loaded);
        }
        *running = config;
        Ok(plan)
    }
}

/// Pingora's signal watch, extended: SIGQUIT, SIGTERM and SIGINT keep their Pingora
/// meaning (upgrade, graceful stop, fast stop); SIGHUP reloads and SIGUSR2 reloads and
/// restarts the workers, without leaving the watch.
pub struct Signals {
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr2)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!(
                "[RELOAD] cannot install the SIGHUP/SIGUSR2 handlers; reload is unavailable"
            );
            return UnixShutdownSignalWatch.recv().await;
        };
        loop {
            let restart_workers = tokio::select! {
                _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
                _ = term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
                _ = hup.recv() => false,
                _ = usr2.recv() => true,
            };
            tracing::info!(restart_workers, "[RELOAD] START");
            let reloader = self.reloader.clone();
            // Loading and compressing static files is CPU work: off the signal loop.
            let _ = tokio::task::spawn_blocking(move || reloader.reload(restart_workers)).await;
        }
    }
}

/// Ignore SIGHUP and SIGUSR2 until [`Signals`] handles them, so a reload that arrives
/// while the gateway starts is not taken for the signals' default action (terminate).
pub fn ignore_until_handled() {
    // SAFETY: setting a disposition to SIG_IGN has no handler code to be unsafe in.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_changed_key_is_sorted_by_where_it_takes_effect() {
        let old = Config::default();
        assert_eq!(plan(&old, &old), Plan::default());

        let mut new = old.clone();
        new.gateway.max_body_bytes = 1;
        new.gateway.public_url = "https://btp.example.ma".into();
        new.static_files.root = "www".into();
        let p = plan(&old, &new);
        assert_eq!(
            p.keys(Effect::Live),
            vec![
                "gateway.max_body_bytes",
                "gateway.public_url",
                "static.root"
            ]
        );
        assert!(!p.restarts_workers());

        let mut new = old.clone();
        new.realtime.ping_interval_ms = 1_000;
        new.database.url = "postgres://btp@127.0.0.1/btp".into();
        let p = plan(&old, &new);
        assert_eq!(p.keys(Effect::Workers), vec!["database", "realtime"]);
        assert!(p.restarts_workers());

        let mut new = old.clone();
        new.gateway.listen = "0.0.0.0:80".into();
        new.gateway.threads = 4;
        new.gateway.acme_domains = vec!["btp.example.ma".into()];
        new.api.workers = 2;
        let p = plan(&old, &new);
        assert_eq!(
            p.keys(Effect::NewProcess),
            vec![
                "gateway.listen",
                "gateway.threads",
                "gateway.acme_*",
                "api.workers"
            ]
        );
        assert!(!p.restarts_workers());
    }
}
