//! Operator visibility: the Prometheus metrics the gateway keeps (served by
//! [`crate::admin`]).
//!
//! The registry is private to the gateway (not the process-global default) so nothing else
//! linked into `btp` can leak series into it. Labels are bounded sets (route class, status
//! code, encoding, worker index), never paths or client data, so cardinality cannot grow
//! with traffic.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::assets::Encoding;
use crate::route::Route;

/// Every series the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    tunnels_open: IntGauge,
    handoffs: IntCounterVec,
    received: IntCounter,
    sent: IntCounter,
    static_hits: IntCounterVec,
    upstream_healthy: IntGaugeVec,
    connections_open: IntGauge,
    connections_refused: IntCounterVec,
    connections_evicted: IntCounter,
    upstream_waits: IntCounter,
    tls_handshakes_failed: IntCounterVec,
    per_request: PerRequest,
}

/// The series every request touches, resolved on first use and kept: a labelled lookup
/// formats, hashes and takes a lock, which on the static path is a measurable share of a
/// request. Every route's duration and its 200 count exist from the start (so that
/// `rate()` over them is defined on a fresh gateway); other statuses appear when first
/// answered.
struct PerRequest {
    /// `[route][status slot]`, slot 0 is "none" (no status), then 100..=599.
    requests: Vec<OnceLock<IntCounter>>,
    duration: Vec<OnceLock<Histogram>>,
    static_hits: [OnceLock<IntCounter>; 3],
}

const ROUTES: usize = Route::ALL.len();
const STATUS_SLOTS: usize = 501;

impl PerRequest {
    fn new() -> PerRequest {
        PerRequest {
            requests: (0..ROUTES * STATUS_SLOTS)
                .map(|_| OnceLock::new())
                .collect(),
            duration: (0..ROUTES).map(|_| OnceLock::new()).collect(),
            static_hits: Default::default(),
        }
    }

    fn status_slot(status: u16) -> Option<usize> {
        match status {
            0 => Some(0),
            100..=599 => Some(usize::from(status) - 99),
            _ => None,
        }
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "btp_gateway_requests_total",
                "Requests answered, by route class and status code.",
            ),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "btp_gateway_request_duration_seconds",
                "Time from request headers to the end of the response (upgraded tunnels: their lifetime).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "btp_gateway_upstream_errors_total",
                "Failures talking to API workers, by kind.",
            ),
            &["kind"],
        )?;
        let tunnels_open = IntGauge::new(
            "btp_gateway_tunnels_open",
            "Upgraded (WebSocket) tunnels currently open.",
        )?;
        let handoffs = IntCounterVec::new(
            Opts::new(
                "btp_gateway_websocket_handoffs_total",
                "WebSocket connections handed to their API worker instead of relayed (gateway.websocket_handoff), by result: ok, full (the worker's queue was full: relayed), failed (relayed).",
            ),
            &["result"],
        )?;
        let received = IntCounter::new(
            "btp_gateway_received_bytes_total",
            "Request body bytes received from clients (including upgraded tunnel traffic).",
        )?;
        let sent = IntCounter::new(
            "btp_gateway_sent_bytes_total",
            "Response body bytes sent to clients (including upgraded tunnel traffic).",
        )?;
        let static_hits = IntCounterVec::new(
            Opts::new(
                "btp_gateway_static_hits_total",
                "Static files served, by content encoding.",
            ),
            &["encoding"],
        )?;
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "btp_gateway_upstream_healthy",
                "1 if the API worker passed its last health check.",
            ),
            &["worker"],
        )?;
        let connections_open = IntGauge::new(
            "btp_gateway_connections_open",
            "Client connections of the public listeners held now (gateway.max_connections).",
        )?;
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "btp_gateway_connections_refused_total",
                "Client connections closed at accept, by the limit that was reached.",
            ),
            &["limit"],
        )?;
        let upstream_waits = IntCounter::new(
            "btp_gateway_upstream_waits_total",
            "Requests that waited for a connection to their API worker (gateway.upstream_max_connections busy).",
        )?;
        let connections_evicted = IntCounter::new(
            "btp_gateway_connections_evicted_total",
            "Idle keep-alive connections closed to make room for a new client at gateway.max_connections.",
        )?;
        let tls_handshakes_failed = IntCounterVec::new(
            Opts::new(
                "btp_gateway_tls_handshakes_failed_total",
                "TLS handshakes that did not complete, by reason (timeout: gateway.header_timeout_ms).",
            ),
            &["reason"],
        )?;
        for limit in ["max_connections", "max_connections_per_ip"] {
            connections_refused.with_label_values(&[limit]);
        }
        for reason in ["timeout", "error"] {
            tls_handshakes_failed.with_label_values(&[reason]);
        }
        // Known label values start at zero, so every series exists from the first scrape
        // and rates over them are defined.
        for kind in ["connect", "timeout", "protocol", "busy"] {
            upstream_errors.with_label_values(&[kind]);
        }
        for encoding in ["identity", "gzip", "br"] {
            static_hits.with_label_values(&[encoding]);
        }
        for result in ["ok", "full", "failed"] {
            handoffs.with_label_values(&[result]);
        }
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(tunnels_open.clone()))?;
        registry.register(Box::new(handoffs.clone()))?;
        registry.register(Box::new(received.clone()))?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(static_hits.clone()))?;
        registry.register(Box::new(upstream_healthy.clone()))?;
        registry.register(Box::new(connections_open.clone()))?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(connections_evicted.clone()))?;
        registry.register(Box::new(upstream_waits.clone()))?;
        registry.register(Box::new(tls_handshakes_failed.clone()))?;
        let per_request = PerRequest::new();
        for route in Route::ALL {
            per_request.duration[route.index()]
                .get_or_init(|| duration.with_label_values(&[route.label()]));
            if let Some(slot) = PerRequest::status_slot(200) {
                per_request.requests[route.index() * STATUS_SLOTS + slot]
                    .get_or_init(|| requests.with_label_values(&[route.label(), "200"]));
            }
        }
        Ok(Metrics {
            registry,
            requests,
            duration,
            upstream_errors,
            tunnels_open,
            handoffs,
            received,
            sent,
            static_hits,
            upstream_healthy,
            connections_open,
            connections_refused,
            connections_evicted,
            upstream_waits,
            tls_handshakes_failed,
            per_request,
        })
    }

    /// One finished request.
    pub fn observe(
        &self,
        route: Route,
        status: u16,
        seconds: f64,
        bytes_in: usize,
        bytes_out: usize,
    ) {
        let status_label = || {
            if status == 0 {
                "none".to_string()
            } else {
                status.to_string()
            }
        };
        let counter = |label: &str| self.requests.with_label_values(&[route.label(), label]);
        match PerRequest::status_slot(status) {
            Some(slot) => self.per_request.requests[route.index() * STATUS_SLOTS + slot]
                .get_or_init(|| counter(&status_label()))
                .inc(),
            None => counter(&status_label()).inc(),
        }
        self.per_request.duration[route.index()]
            .get_or_init(|| self.duration.with_label_values(&[route.label()]))
            .observe(seconds);
        self.received.inc_by(bytes_in as u64);
        self.sent.inc_by(bytes_out as u64);
    }

    pub fn upstream_wait(&self) {
        self.upstream_waits.inc();
    }

    pub fn upstream_error(&self, kind: &str) {
        self.upstream_errors.with_label_values(&[kind]).inc();
    }

    pub fn tunnel_opened(&self) {
        self.tunnels_open.inc();
    }

    pub fn tunnel_closed(&self) {
        self.tunnels_open.dec();
    }

    pub fn connection_opened(&self) {
        self.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.connections_open.dec();
    }

    /// A connection closed at accept: `limit` is the one reached.
    pub fn connection_refused(&self, limit: &str) {
        self.connections_refused.with_label_values(&[limit]).inc();
    }

    pub fn connection_evicted(&self) {
        self.connections_evicted.inc();
    }

    /// A TLS handshake that did not complete: `timeout` or `error`.
    pub fn tls_handshake_failed(&self, reason: &str) {
        self.tls_handshakes_failed
            .with_label_values(&[reason])
            .inc();
    }

    /// A WebSocket handoff attempt: `ok`, `full` or `failed`.
    pub fn handoff(&self, result: &str) {
        self.handoffs.with_label_values(&[result]).inc();
    }

    pub fn static_hit(&self, encoding: Encoding) {
        let slot = match encoding {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Brotli => 2,
        };
        self.per_request.static_hits[slot]
            .get_or_init(|| self.static_hits.with_label_values(&[encoding.token()]))
            .inc();
    }

    pub fn set_upstream_health(&self, worker: usize, healthy: bool) {
        self.upstream_healthy
            .with_label_values(&[worker.to_string().as_str()])
            .set(i64::from(healthy));
    }

    /// Add series owned by another part of the gateway (supervisor, reload) to the
    /// registry, so they are served with these.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_exported_with_the_gateway_prefix() {
        let m = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        m.observe(Route::Static, 200, 0.001, 0, 10);
        m.upstream_error("connect");
        m.static_hit(Encoding::Brotli);
        m.set_upstream_health(0, true);
        m.tunnel_opened();
        let text = String::from_utf8(m.render()).unwrap_or_default();
        for name in [
            "btp_gateway_requests_total{route=\"static\",status=\"200\"} 1",
            "btp_gateway_request_duration_seconds_bucket",
            "btp_gateway_upstream_errors_total{kind=\"connect\"} 1",
            "btp_gateway_tunnels_open 1",
            "btp_gateway_received_bytes_total 0",
            "btp_gateway_sent_bytes_total 10",
            "btp_gateway_static_hits_total{encoding=\"br\"} 1",
            "btp_gateway_upstream_healthy{worker=\"0\"} 1",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn cached_series_count_like_labelled_ones_and_every_route_starts_at_zero() {
        let fresh = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8(fresh.render()).unwrap_or_default();
        for label in ["realtime", "api", "config", "static", "admin"] {
            for line in [
                format!("btp_gateway_requests_total{{route=\"{label}\",status=\"200\"}} 0"),
                format!("btp_gateway_request_duration_seconds_count{{route=\"{label}\"}} 0"),
            ] {
                assert!(text.contains(&line), "missing {line} in\n{text}");
            }
        }
        let m = Metrics::new().unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..3 {
            m.observe(Route::Api, 503, 0.001, 0, 0);
        }
        m.observe(Route::Metrics, 200, 0.001, 0, 0);
        m.observe(Route::Healthz, 200, 0.001, 0, 0);
        m.observe(Route::Realtime, 0, 0.001, 0, 0);
        m.observe(Route::Static, 999, 0.001, 0, 0);
        let text = String::from_utf8(m.render()).unwrap_or_default();
        for line in [
            "btp_gateway_requests_total{route=\"api\",status=\"503\"} 3",
            "btp_gateway_requests_total{route=\"admin\",status=\"200\"} 2",
            "btp_gateway_requests_total{route=\"realtime\",status=\"none\"} 1",
            "btp_gateway_requests_total{route=\"static\",status=\"999\"} 1",
            "btp_gateway_request_duration_seconds_count{route=\"admin\"} 2",
            "btp_gateway_request_duration_seconds_count{route=\"api\"} 3",
            "btp_gateway_request_duration_seconds_count{route=\"config\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // Statuses nothing answered yet stay unlisted.
        assert!(!text.contains("status=\"404\""), "{text}");
    }
}
