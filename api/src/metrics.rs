//! Prometheus metrics of one API process, in its own registry (not the global default,
//! so a test can run several servers in one process), served on `GET /metrics`.
//! Every name starts with `btp_api_`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Ops by kind (`create|update|delete|invalid`) and ack status
    /// (`applied|conflict|rejected|duplicate`).
    pub ops: IntCounterVec,
    pub push_seconds: Histogram,
    pub pull_seconds: Histogram,
    /// Client-visible errors by code (`validation_failed`, `unauthorized`, …).
    pub errors: IntCounterVec,
    pub pool_size: IntGauge,
    pub pool_idle: IntGauge,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// The process's registry, for collectors registered elsewhere (the realtime layer).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn new(worker: u16) -> Result<Metrics, MetricsError> {
        let registry = Registry::new_custom(
            Some("btp_api".into()),
            Some([("worker".to_string(), worker.to_string())].into()),
        )?;
        let latency_buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        let ops = IntCounterVec::new(
            Opts::new(
                "sync_ops_total",
                "Sync ops processed, by kind and ack status",
            ),
            &["kind", "status"],
        )?;
        let push_seconds = Histogram::with_opts(
            HistogramOpts::new("push_duration_seconds", "Time to apply one push batch")
                .buckets(latency_buckets.clone()),
        )?;
        let pull_seconds = Histogram::with_opts(
            HistogramOpts::new("pull_duration_seconds", "Time to answer one pull")
                .buckets(latency_buckets),
        )?;
        let errors = IntCounterVec::new(
            Opts::new("errors_total", "Client-visible errors, by code"),
            &["code"],
        )?;
        let pool_size = IntGauge::new("db_pool_connections", "Open database connections")?;
        let pool_idle = IntGauge::new("db_pool_idle_connections", "Idle database connections")?;
        registry.register(Box::new(ops.clone()))?;
        registry.register(Box::new(push_seconds.clone()))?;
        registry.register(Box::new(pull_seconds.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(pool_size.clone()))?;
        registry.register(Box::new(pool_idle.clone()))?;
        Ok(Metrics {
            registry,
            ops,
            push_seconds,
            pull_seconds,
            errors,
            pool_size,
            pool_idle,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
