//! A finished request, as operators see it: its request metrics and one access-log line.
//! HTTP/1 requests (the edge, once answered), HTTP/2 streams (`serve/h2.rs`, at
//! `logging`) and WebSocket tunnels (at the tunnel's close) all end here, so a request
//! reads the same in the log and in `/metrics` whichever path served it.

use std::fmt::Display;
use std::net::IpAddr;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::route::Route;

/// What is known about a request once it is over.
pub struct Finished<'a> {
    pub method: &'a dyn Display,
    pub path: &'a str,
    /// 0 when no response was written.
    pub status: u16,
    pub route: Route,
    /// From the request head to the end of the response (a tunnel: its whole life).
    pub elapsed: Duration,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub client: Option<IpAddr>,
    pub worker: Option<usize>,
    /// The connection was handed to `worker`, which answered it (status 0 here: the
    /// gateway wrote no response).
    pub handoff: bool,
    pub request_id: &'a str,
    pub tls: bool,
    pub error: Option<&'a dyn Display>,
}

impl Finished<'_> {
    pub fn record(&self, metrics: &Metrics) {
        metrics.observe(
            self.route,
            self.status,
            self.elapsed.as_secs_f64(),
            self.bytes_in,
            self.bytes_out,
        );
        tracing::info!(
            target: "access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            route = self.route.label(),
            duration_ms = self.elapsed.as_secs_f64() * 1000.0,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            client = %self.client.map(|ip| ip.to_string()).unwrap_or_default(),
            worker = self.worker.map(|w| w as i64).unwrap_or(-1),
            handoff = self.handoff,
            request_id = %self.request_id,
            tls = self.tls,
            error = %self.error.map(|e| e.to_string()).unwrap_or_default(),
        );
    }
}
