//! Active health checks: every `health_check_interval` each worker's `GET /api/health`
//! must answer `200`, or the worker is not picked until it does again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Pool;
use crate::live::Live;
use crate::metrics::Metrics;

/// One `GET /api/health` probe: healthy means a `200` status line within `timeout`.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "GET /api/health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: btp-gateway-health\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 16];
        let mut filled = 0;
        while filled < head.len() {
            let n = stream.read(&mut head[filled..]).await?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok::<bool, std::io::Error>(
            head[..filled].starts_with(b"HTTP/1.1 200 ")
                || head[..filled].starts_with(b"HTTP/1.0 200 "),
        )
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}

/// The Pingora background service that probes every worker each
/// `health_check_interval` (read from the live settings, so a reload retunes it).
pub struct HealthCheck {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub live: Live,
}

impl HealthCheck {
    /// Probe every worker once and record the verdicts.
    pub async fn round(&self) {
        let settings = self.live.load().settings.clone();
        let timeout =
            settings.connect_timeout.max(Duration::from_millis(500)) + Duration::from_secs(1);
        let probes = (0..self.pool.len()).filter_map(|i| {
            let addr = self.pool.addr(i)?;
            Some(async move { (i, probe(addr, timeout).await) })
        });
        // Concurrently, so one hung worker cannot delay the verdict on the others.
        for (i, healthy) in futures::future::join_all(probes).await {
            if self.pool.is_healthy(i) != healthy {
                tracing::info!(worker = i, healthy, "api worker health changed");
            }
            self.pool.set_healthy(i, healthy);
            self.metrics.set_upstream_health(i, healthy);
        }
    }
}

#[async_trait]
impl BackgroundService for HealthCheck {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.round().await;
            let interval = self.live.load().settings.health_check_interval;
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
