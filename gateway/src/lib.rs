//! The BTP edge gateway on Pingora: one public port that serves the web app from memory,
//! `/config.json`, and forwards `/api/` and `/socket.io/` (WebSocket upgrades handed to
//! their worker, or relayed as byte tunnels) to the API workers; an admin port for
//! metrics and probes.
//!
//! The folders follow a request, and each imports only those after it: [`edge`] (the
//! front door: listeners, connection limits, TLS handshakes, each HTTP/1 request read
//! with the codec of `btp_h1`), [`decide`] (the one decision each request gets, HTTP/1 or
//! HTTP/2), [`serve`] (the servers that act on a decision: replies, forwarding, upgrades,
//! HTTP/2 streams) and [`upstream`] (the API workers: choice, health, kept-alive
//! connections, failures). Beside them: [`config`] and [`live`] (the settings derived
//! from `config.toml`, and the snapshot a reload swaps), [`path`] and [`route`] (what was
//! asked and who answers), [`assets`] (static files), [`forward`] (the forwarding headers
//! every path sends), [`respond`] (the headers and error shape of every response),
//! [`access`] (the access log), [`tls`], [`metrics`] and [`admin`]. Operations: [`reload`]
//! (SIGHUP/SIGUSR2) and [`supervisor`] (the API workers of `btp up`).
//! `tests/layout.rs` keeps the imports one-way.

pub mod access;
pub mod acme;
pub mod admin;
pub mod assets;
pub mod config;
pub mod decide;
pub mod edge;
pub mod forward;
pub mod live;
pub mod metrics;
pub mod path;
mod private;
pub mod reload;
pub mod respond;
pub mod route;
pub mod serve;
pub mod supervisor;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::acme::Acme;
use crate::admin::Admin;
use crate::assets::Store;
use crate::config::Settings;
use crate::edge::gate::Gate;
use crate::edge::listen::Listen;
use crate::edge::Edge;
use crate::metrics::Metrics;
use crate::reload::{Reloader, Signals};
use crate::serve::api::Forwarder;
use crate::serve::h2::Gateway;
use crate::serve::upgrade::Tunnels;
use crate::supervisor::{Launcher, Supervisor};
use crate::upstream::conns::Conns;
use crate::upstream::health::HealthCheck;
use crate::upstream::Pool;

/// How `btp` starts the gateway.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the configuration came from (kept for reload).
    pub source: btp_config::Source,
    /// Take over the listening sockets of a running gateway (Pingora's graceful upgrade).
    pub upgrade: bool,
    /// `btp up`: run and supervise the API workers with this command.
    pub workers: Option<Launcher>,
}

/// Build and run the gateway. Blocks; on success it never returns (Pingora exits the
/// process on shutdown). Every start-up problem is an error, never a panic.
pub fn run(config: btp_config::Config, opts: RunOptions) -> anyhow::Result<()> {
    reload::ignore_until_handled();
    let settings = Arc::new(Settings::from_config(&config)?);
    let store = Arc::new(Store::load(&settings.static_root).context("loading static files")?);
    let pool = Arc::new(Pool::new(settings.workers.clone()));
    let metrics = Arc::new(Metrics::new().context("creating metrics")?);
    let supervisor = match &opts.workers {
        Some(launcher) => Some(
            Supervisor::new(launcher.clone(), pool.clone(), &config, &metrics)
                .context("setting up the API worker supervisor")?,
        ),
        None => None,
    };
    let challenges = Arc::new(acme::Challenges::default());
    let certificate = match (settings.tls_listen, &settings.acme) {
        (None, _) => None,
        (Some(_), Some(acme)) => {
            let stored = Acme::stored(acme);
            match &stored {
                Some(loaded) => tracing::info!(
                    "[ACME] certificate kept in {}: {}",
                    acme.dir.display(),
                    loaded.describe()
                ),
                None => tracing::info!(
                    "[ACME] no certificate for {} yet: ordering one",
                    acme.domains.join(", ")
                ),
            }
            Some(tls::Certificate::new(stored, &metrics).context("creating certificate metrics")?)
        }
        (Some(_), None) => {
            let loaded = tls::load(&settings.tls_cert, &settings.tls_key)?;
            tracing::info!("certificate: {}", loaded.describe());
            Some(
                tls::Certificate::new(Some(loaded), &metrics)
                    .context("creating certificate metrics")?,
            )
        }
    };
    let acme = match (&settings.acme, &certificate) {
        (Some(acme), Some(certificate)) => Some(background_service(
            "acme",
            Acme::new(
                acme.clone(),
                certificate.clone(),
                challenges.clone(),
                &metrics,
            )
            .context("creating ACME metrics")?,
        )),
        _ => None,
    };
    let tls = match (settings.tls_listen, &certificate) {
        (Some(addr), Some(certificate)) => {
            let acme_alpn =
                (settings.acme.as_ref()).is_some_and(|a| a.challenge == acme::Challenge::TlsAlpn01);
            Some((
                addr,
                Arc::new(tls::settings(certificate.clone(), acme_alpn)?.build()),
            ))
        }
        _ => None,
    };
    if !opts.upgrade {
        // Pingora panics when a listener cannot bind; find out first, with a message.
        let supervised = match supervisor {
            Some(_) => settings.workers.clone(),
            None => Vec::new(),
        };
        for addr in [
            Some(settings.listen),
            Some(settings.admin_listen),
            settings.tls_listen,
        ]
        .into_iter()
        .flatten()
        .chain(supervised)
        {
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr}"))?;
        }
    }
    tracing::info!(
        files = store.len(),
        listen = %settings.listen,
        admin = %settings.admin_listen,
        tls = ?settings.tls_listen,
        workers = settings.workers.len(),
        threads = settings.threads,
        max_connections = settings.max_connections,
        max_connections_per_ip = settings.max_connections_per_ip,
        tunnel_idle_timeout_ms = settings.tunnel_idle_timeout.as_millis() as u64,
        "gateway starting"
    );

    let opt = Opt {
        upgrade: opts.upgrade,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    private::private_dir(&settings.upgrade_dir).with_context(|| {
        format!(
            "{}: the binary upgrade's socket needs a private directory",
            settings.upgrade_dir.display()
        )
    })?;
    let mut server =
        Server::new_with_opt_and_conf(opt, server_conf(settings.listen, &settings.upgrade_dir));
    server.bootstrap();

    let live = live::live(settings.clone(), store, challenges);
    let forwarder = Arc::new(Forwarder::new(Arc::new(Conns::new(
        pool.clone(),
        metrics.clone(),
        settings.upstream_max_connections,
        settings.threads,
    ))));
    let gateway = Gateway {
        live: live.clone(),
        forwarder: forwarder.clone(),
        metrics: metrics.clone(),
    };
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, gateway);
    let mut options = HttpServerOptions::default();
    // Not to proxy it: so that the gateway answers CONNECT itself, with its headers.
    options.allow_connect_method_proxying = true;
    proxy.server_options = Some(options);
    let tunnels = Tunnels {
        pool: pool.clone(),
        metrics: metrics.clone(),
    };
    let edge = Edge::new(
        Arc::new(proxy),
        live.clone(),
        tunnels,
        forwarder,
        metrics.clone(),
    );
    let public = Listen {
        edge: Arc::new(edge),
        plain: settings.listen,
        tls,
        live: live.clone(),
        gate: Gate::new(metrics.clone()),
        metrics: metrics.clone(),
        threads: settings.threads,
    };

    let mut admin = Service::new(
        "btp admin".to_string(),
        Admin {
            metrics: metrics.clone(),
            pool: pool.clone(),
        },
    );
    admin.add_tcp(&settings.admin_listen.to_string());

    let health = HealthCheck {
        pool,
        metrics: metrics.clone(),
        live: live.clone(),
    };
    if opts.upgrade {
        // The old process's workers are serving: learn their health before accepting,
        // or the first requests would find no healthy worker and get a 503.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the first health check")?
            .block_on(health.round());
    }
    let health = background_service("api health", health);

    let control = supervisor.map(|(supervisor, control)| {
        server.add_service(supervisor);
        control
    });
    let reloader = Reloader::new(opts.source, config, live, certificate, control, &metrics)
        .context("creating reload metrics")?;
    server.add_service(public);
    server.add_service(admin);
    server.add_service(health);
    if let Some(acme) = acme {
        server.add_service(acme);
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            reloader: Arc::new(reloader),
        }),
    });
    std::process::exit(0)
}

/// Pingora's process settings. The upgrade socket is named after the public port, so
/// that gateways on different ports never share one and a graceful upgrade of one finds
/// its predecessor, in a directory only this user can enter: whoever listens on that path
/// is handed the listening sockets (the patched transfer also checks the peer's user).
fn server_conf(listen: SocketAddr, upgrade_dir: &Path) -> ServerConf {
    ServerConf {
        // For the admin listener, the health checks and the supervisor: light work. The
        // public connections are served by the gateway's own threads (edge::listen).
        threads: 1,
        upgrade_sock: upgrade_dir
            .join(format!("{}.sock", listen.port()))
            .display()
            .to_string(),
        pid_file: upgrade_dir
            .join(format!("{}.pid", listen.port()))
            .display()
            .to_string(),
        work_stealing: true,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    }
}

pub use tls::generate_dev_cert;
