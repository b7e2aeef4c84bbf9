//! What the gateway derives from `config.toml` once at start: parsed addresses, timeouts
//! as durations, the trusted-proxy matcher, and the `/config.json` document.
//!
//! Deriving here (and nowhere else) keeps the one-source-of-truth rule: the tunnel timeout
//! comes from `[realtime]` through `btp_config`, never from a gateway knob, so the proxy and
//! the realtime server cannot disagree about when a silent socket is dead.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use btp_config::Config;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("gateway.{key} = {value:?} is not an address")]
    Address { key: &'static str, value: String },
    #[error("api.listen = {0:?} gives no worker address")]
    NoWorkers(String),
}

/// Everything the request path needs, immutable after start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Worker threads, resolved (`gateway.threads`, 0 = one per CPU core).
    pub threads: usize,
    pub admin_listen: SocketAddr,
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub redirect_http: bool,
    pub static_root: PathBuf,
    /// The private directory (mode 0700) of the binary upgrade's socket: next to the pid
    /// file, `upgrade/` in its directory.
    pub upgrade_dir: PathBuf,
    /// Certificates from an ACME authority (`gateway.acme_domains` not empty); they are
    /// kept in `acme/` next to the pid file.
    pub acme: Option<crate::acme::AcmeSettings>,
    pub workers: Vec<SocketAddr>,
    pub trusted: Vec<Cidr>,
    pub max_body_bytes: u64,
    /// Request head, and TLS handshake, within this.
    pub header_timeout: Duration,
    /// An HTTP/1 connection between requests, or an HTTP/2 one with no traffic.
    pub keepalive_timeout: Duration,
    /// A whole request body; a response write.
    pub body_timeout: Duration,
    pub max_header_bytes: usize,
    /// Client connections at once, resolved (`gateway.max_connections`, 0 = derived
    /// from the open-file limit).
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Per API worker, read at start (a new process changes it).
    pub upstream_max_connections: usize,
    pub connect_timeout: Duration,
    pub api_read_timeout: Duration,
    /// Idle limit of an upgraded stream, both directions (`Realtime::tunnel_idle_timeout`).
    pub tunnel_idle_timeout: Duration,
    /// `gateway.websocket_handoff`.
    pub websocket_handoff: bool,
    /// Read limit of a long-polling GET (`Realtime::polling_read_timeout`).
    pub polling_read_timeout: Duration,
    pub health_check_interval: Duration,
    /// What `GET /config.json` says about these settings (see [`crate::live::Snapshot`]).
    pub client_config: serde_json::Map<String, serde_json::Value>,
}

impl Settings {
    pub fn from_config(c: &Config) -> Result<Settings, SettingsError> {
        let addr = |key: &'static str, value: &str| {
            value
                .parse::<SocketAddr>()
                .map_err(|_| SettingsError::Address {
                    key,
                    value: value.to_string(),
                })
        };
        let tls_listen = match &c.gateway.tls_listen {
            Some(v) => Some(addr("tls_listen", v)?),
            None => None,
        };
        let workers = c.api_worker_addrs();
        if workers.is_empty() {
            return Err(SettingsError::NoWorkers(c.api.listen.clone()));
        }
        let client_config = serde_json::Map::from_iter([
            ("apiUrl".into(), json!(c.gateway.public_url)),
            ("realtimePath".into(), json!("/socket.io/")),
            ("transports".into(), json!(["websocket"])),
            ("pingIntervalMs".into(), json!(c.realtime.ping_interval_ms)),
            ("pingTimeoutMs".into(), json!(c.realtime.ping_timeout_ms)),
            ("version".into(), json!(env!("CARGO_PKG_VERSION"))),
        ]);
        // The pid file's directory holds the process's private state.
        let data_dir = c
            .resolve(&c.gateway.pid_file)
            .parent()
            .map_or_else(|| PathBuf::from("."), PathBuf::from);
        Ok(Settings {
            listen: addr("listen", &c.gateway.listen)?,
            admin_listen: addr("admin_listen", &c.gateway.admin_listen)?,
            tls_listen,
            tls_cert: c.resolve(&c.gateway.tls_cert),
            tls_key: c.resolve(&c.gateway.tls_key),
            redirect_http: c.gateway.redirect_http && tls_listen.is_some(),
            threads: match c.gateway.threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n => n,
            },
            static_root: c.static_root(),
            upgrade_dir: data_dir.join("upgrade"),
            acme: (!c.gateway.acme_domains.is_empty()).then(|| crate::acme::AcmeSettings {
                domains: c.gateway.acme_domains.clone(),
                email: c.gateway.acme_email.clone(),
                directory: c.gateway.acme_directory.clone(),
                ca_roots: (!c.gateway.acme_ca_roots.is_empty())
                    .then(|| c.resolve(&c.gateway.acme_ca_roots)),
                dir: data_dir.join("acme"),
                challenge: match c.gateway.acme_challenge.as_str() {
                    "http-01" => crate::acme::Challenge::Http01,
                    _ => crate::acme::Challenge::TlsAlpn01,
                },
            }),
            workers,
            trusted: c
                .gateway
                .trusted_proxies
                .iter()
                .filter_map(|s| Cidr::parse(s))
                .collect(),
            max_body_bytes: c.gateway.max_body_bytes,
            header_timeout: Duration::from_millis(c.gateway.header_timeout_ms),
            keepalive_timeout: Duration::from_millis(c.gateway.keepalive_timeout_ms),
            body_timeout: Duration::from_millis(c.gateway.body_timeout_ms),
            max_header_bytes: usize::try_from(c.gateway.max_header_bytes).unwrap_or(usize::MAX),
            max_connections: match c.gateway.max_connections {
                0 => derived_max_connections(),
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            max_connections_per_ip: usize::try_from(c.gateway.max_connections_per_ip)
                .unwrap_or(usize::MAX),
            upstream_max_connections: usize::try_from(c.gateway.upstream_max_connections)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
            connect_timeout: Duration::from_millis(c.gateway.upstream_connect_timeout_ms),
            api_read_timeout: Duration::from_millis(c.gateway.upstream_read_timeout_ms),
            tunnel_idle_timeout: c.realtime.tunnel_idle_timeout(),
            websocket_handoff: c.gateway.websocket_handoff,
            polling_read_timeout: c.realtime.polling_read_timeout(),
            health_check_interval: Duration::from_millis(c.gateway.health_check_interval_ms),
            client_config,
        })
    }

    pub fn is_trusted(&self, peer: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(peer))
    }

    /// The public origin for the HTTP → HTTPS redirect: the request's host with the TLS
    /// listener's port (omitted when it is 443).
    pub fn https_location(&self, host: &str, path_and_query: &str) -> Option<String> {
        let port = self.tls_listen?.port();
        let hostname = strip_port(host);
        if hostname.is_empty() {
            return None;
        }
        Some(if port == 443 {
            format!("https://{hostname}{path_and_query}")
        } else {
            format!("https://{hostname}:{port}{path_and_query}")
        })
    }
}

/// Descriptors kept for everything but client connections: listeners, the admin port,
/// logs, the database of a worker run in process, health checks.
const RESERVED_FDS: u64 = 128;

/// `gateway.max_connections = 0`: what the open-file limit allows, each client connection
/// counted with a second descriptor for its upstream (a relayed WebSocket, a forwarded
/// request), less what the process needs besides.
pub fn derived_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft.saturating_sub(RESERVED_FDS) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// An IP network from `trusted_proxies` (`10.0.0.0/8`, `::1`, `192.168.1.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { net: ip, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), u32::from(a).into(), self.prefix, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                masked(u128::from(n), u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(net: u128, addr: u128, prefix: u8, bits: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - u32::from(prefix);
    (net >> shift) == (addr >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching_covers_v4_v6_and_mapped_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let c = |s: &str| Cidr::parse(s).unwrap_or_else(|| panic!("{s}"));
        assert!(c("10.0.0.0/8").contains(ip("10.1.2.3")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(c("127.0.0.1").contains(ip("::ffff:127.0.0.1")));
        assert!(c("::1").contains(ip("::1")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(c("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }

    #[test]
    fn tunnel_timeout_derives_from_the_heartbeat() {
        let mut c = Config::default();
        c.realtime.ping_interval_ms = 300;
        c.realtime.ping_timeout_ms = 200;
        let s = Settings::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.tunnel_idle_timeout, c.realtime.tunnel_idle_timeout());
        assert_eq!(s.polling_read_timeout, c.realtime.polling_read_timeout());
        let doc = &s.client_config;
        assert_eq!(doc["pingIntervalMs"], 300);
        assert_eq!(doc["realtimePath"], "/socket.io/");
        assert_eq!(doc["transports"], serde_json::json!(["websocket"]));
    }

    #[test]
    fn https_redirect_keeps_the_host_and_uses_the_tls_port() {
        let mut c = Config::default();
        c.gateway.tls_listen = Some("0.0.0.0:8443".into());
        let s = Settings::from_config(&c).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.https_location("example.ma:8080", "/a?b=1").as_deref(),
            Some("https://example.ma:8443/a?b=1")
        );
        assert_eq!(
            s.https_location("[::1]:8080", "/").as_deref(),
            Some("https://[::1]:8443/")
        );
    }
}
