//! Prometheus metrics of one API process, in its own registry (not the global default,
//! so a test can run several servers in one process), served on `GET /metrics`.
//! Every name starts with `btp_api_`.
//!
//! Every labelled counter is created with each of its known label values at 0, so a
//! fresh worker already exports them: a dashboard's `rate()` reads 0, not "no data",
//! and an alert on a counter's increase sees its first event.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
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
    /// argon2 computations by `op` (`hash` at registration, `verify` at login).
    pub hashes: IntCounterVec,
    /// argon2 computations that waited for a free `auth.max_concurrent_hashes` permit.
    pub hash_waits: IntCounter,
    /// Attempts refused by a throttle, by the `limit` that was full.
    pub throttled: IntCounterVec,
    /// Bearer token lookups, by `result` (`live`, `refused`).
    pub token_checks: IntCounterVec,
}

/// Label values of `sync_ops_total`.
pub const OP_KINDS: [&str; 4] = ["create", "update", "delete", "invalid"];
pub const OP_STATUSES: [&str; 4] = ["applied", "conflict", "rejected", "duplicate"];
/// Every client-visible error code (docs/API.md).
pub const ERROR_CODES: [&str; 12] = [
    "invalid_json",
    "invalid_body",
    "unauthorized",
    "invalid_credentials",
    "not_found",
    "method_not_allowed",
    "conflict",
    "payload_too_large",
    "batch_too_large",
    "validation_failed",
    "rate_limited",
    "internal",
];
pub const HASH_OPS: [&str; 2] = ["hash", "verify"];
pub const THROTTLE_LIMITS: [&str; 4] = ["login_pair", "login_ip", "login_account", "register_ip"];
pub const TOKEN_CHECK_RESULTS: [&str; 2] = ["live", "refused"];

/// A counter family with every combination of `values` (one list per label) at 0.
pub fn counter_vec(
    name: &str,
    help: &str,
    labels: &[&str],
    values: &[&[&str]],
) -> Result<IntCounterVec, prometheus::Error> {
    let vec = IntCounterVec::new(Opts::new(name, help), labels)?;
    let mut combos: Vec<Vec<&str>> = vec![Vec::new()];
    for options in values {
        combos = combos
            .into_iter()
            .flat_map(|prefix| {
                options.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(v);
                    next
                })
            })
            .collect();
    }
    for combo in combos {
        vec.with_label_values(&combo);
    }
    Ok(vec)
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
        let ops = counter_vec(
            "sync_ops_total",
            "Sync ops processed, by kind and ack status",
            &["kind", "status"],
            &[&OP_KINDS, &OP_STATUSES],
        )?;
        let push_seconds = Histogram::with_opts(
            HistogramOpts::new("push_duration_seconds", "Time to apply one push batch")
                .buckets(latency_buckets.clone()),
        )?;
        let pull_seconds = Histogram::with_opts(
            HistogramOpts::new("pull_duration_seconds", "Time to answer one pull")
                .buckets(latency_buckets),
        )?;
        let errors = counter_vec(
            "errors_total",
            "Client-visible errors, by code",
            &["code"],
            &[&ERROR_CODES],
        )?;
        let hashes = counter_vec(
            "password_hashes_total",
            "argon2 computations, by op (hash: registration, verify: login)",
            &["op"],
            &[&HASH_OPS],
        )?;
        let hash_waits = IntCounter::new(
            "password_hash_waits_total",
            "argon2 computations that waited for a free auth.max_concurrent_hashes permit",
        )?;
        let throttled = counter_vec(
            "throttled_total",
            "Logins and registrations refused by a throttle, by the limit that was full",
            &["limit"],
            &[&THROTTLE_LIMITS],
        )?;
        let token_checks = counter_vec(
            "token_checks_total",
            "Bearer token lookups in the database, by result",
            &["result"],
            &[&TOKEN_CHECK_RESULTS],
        )?;
        let pool_size = IntGauge::new("db_pool_connections", "Open database connections")?;
        let pool_idle = IntGauge::new("db_pool_idle_connections", "Idle database connections")?;
        registry.register(Box::new(ops.clone()))?;
        registry.register(Box::new(push_seconds.clone()))?;
        registry.register(Box::new(pull_seconds.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(pool_size.clone()))?;
        registry.register(Box::new(pool_idle.clone()))?;
        registry.register(Box::new(hashes.clone()))?;
        registry.register(Box::new(hash_waits.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(token_checks.clone()))?;
        Ok(Metrics {
            registry,
            ops,
            push_seconds,
            pull_seconds,
            errors,
            pool_size,
            pool_idle,
            hashes,
            hash_waits,
            throttled,
            token_checks,
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
