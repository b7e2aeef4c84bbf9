//! Everything a request handler (or the realtime layer) needs, opened once per process:
//! the store, the change bus, the sync and auth services, metrics, and the background
//! tasks (PostgreSQL bus listener, retention purge) that live as long as the process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use btp_config::Config;
use tokio::task::JoinHandle;

use crate::auth::{now_millis, AuthService, PasswordParams};
use crate::bus::Bus;
use crate::metrics::{Metrics, MetricsError};
use crate::store::{self, Store, StoreError};
use crate::sync::service::SyncService;

/// How often worker 0 purges expired tombstones, acks, tokens and throttling windows.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("password hashing parameters rejected: {0}")]
    Password(String),
}

/// How to open the state; [`Options::new`] is what `btp api` uses.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub worker: u16,
    pub password: PasswordParams,
    /// Run the hourly retention purge (worker 0 in production; tests call
    /// `Store::purge_tombstones` themselves).
    pub purge: bool,
}

impl Options {
    pub fn new(worker: u16) -> Options {
        Options {
            worker,
            password: PasswordParams::default(),
            purge: worker == 0,
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub worker: u16,
    pub config: Arc<Config>,
    pub store: Arc<Store>,
    /// Committed batches for the realtime layer: `state.bus.subscribe()`.
    pub bus: Bus,
    pub sync: Arc<SyncService>,
    pub auth: Arc<AuthService>,
    pub metrics: Arc<Metrics>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl AppState {
    /// Connect, migrate (every worker may: sqlx serialises migrations with a lock and
    /// skips applied ones), start the bus listener and the purge task.
    pub async fn open(config: Config, options: Options) -> Result<AppState, StartError> {
        let bus = Bus::new();
        let store = Arc::new(
            Store::connect(
                &config.database_url(),
                config.database.max_connections,
                bus.clone(),
            )
            .await?,
        );
        store.migrate().await?;
        let metrics = Arc::new(Metrics::new(options.worker)?);
        let auth = AuthService::new(
            store.clone(),
            metrics.clone(),
            options.password,
            config.auth.clone(),
        )
        .map_err(|e| StartError::Password(e.to_string()))?;
        let sync = SyncService::new(store.clone(), metrics.clone(), config.sync.clone());
        let mut tasks = Vec::new();
        if let Some(listener) = store::spawn_listener(store.clone()).await? {
            tasks.push(listener);
        }
        if options.purge {
            tasks.push(spawn_purge(store.clone(), &config));
        }
        Ok(AppState {
            worker: options.worker,
            config: Arc::new(config),
            store,
            bus,
            sync: Arc::new(sync),
            auth: Arc::new(auth),
            metrics,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }

    /// Stop background tasks and close the pool.
    pub async fn shutdown(&self) {
        let tasks = match self.tasks.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for task in tasks {
            task.abort();
        }
        self.store.close().await;
    }
}

fn spawn_purge(store: Arc<Store>, config: &Config) -> JoinHandle<()> {
    let retention_ms = i64::from(config.sync.tombstone_retention_days) * 86_400_000;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        loop {
            tick.tick().await;
            let now = now_millis();
            match store.purge_tombstones(now - retention_ms).await {
                Ok(p) if p.tombstones > 0 => tracing::info!(
                    users = p.users,
                    tombstones = p.tombstones,
                    "[SYNC] PURGE tombstones"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "[SYNC] PURGE failed"),
            }
            if let Err(e) = store.purge_expired(now).await {
                tracing::error!(error = %e, "[AUTH] PURGE failed");
            }
        }
    })
}
