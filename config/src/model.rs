//! The typed shape of `config.toml`: every key, its default, and the values derived from
//! them. This is the one place a key's name and default are written down; the shipped
//! `config.toml` and `docs/CONFIG.md` mirror it and a test keeps them in step.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How much longer than one full heartbeat cycle an idle upgraded stream may live before
/// the gateway cuts it. A healthy Engine.IO peer exchanges a ping and a pong every
/// `ping_interval`, so a silent stream is dead after `ping_interval + ping_timeout`; the
/// margin absorbs scheduling jitter so the proxy never cuts a socket the server still
/// considers alive.
pub const TUNNEL_IDLE_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Config {
    pub gateway: Gateway,
    #[serde(rename = "static")]
    pub static_files: StaticFiles,
    pub api: Api,
    pub database: Database,
    pub realtime: Realtime,
    pub sync: Sync,
    pub auth: Auth,
    pub log: Log,
    /// Directory that relative paths in the file resolve against (the config file's
    /// directory, or the working directory when running on embedded defaults).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Gateway {
    /// The one public port (plain HTTP).
    pub listen: String,
    /// `/metrics`, `/healthz`, `/readyz`; loopback by default, never public.
    pub admin_listen: String,
    /// Optional HTTPS listener (rustls, TLS 1.2/1.3, HTTP/2 via ALPN).
    pub tls_listen: Option<String>,
    pub tls_cert: String,
    pub tls_key: String,
    /// With a TLS listener: answer plain-HTTP requests with a 308 to HTTPS.
    pub redirect_http: bool,
    /// Peers whose `X-Forwarded-*` headers are trusted (IPs or CIDRs).
    pub trusted_proxies: Vec<String>,
    /// Largest accepted request body; more is a 413.
    pub max_body_bytes: u64,
    /// A client that has not sent complete request headers by then is cut (a TLS
    /// handshake too).
    pub header_timeout_ms: u64,
    /// A kept-alive connection with no request under way is closed after this (HTTP/1
    /// between requests, HTTP/2 with nothing to read or write).
    pub keepalive_timeout_ms: u64,
    /// A whole request body must arrive within this (408), and each write of a response
    /// must be taken by the client within it.
    pub body_timeout_ms: u64,
    /// Largest request head (request line and headers); more is 431.
    pub max_header_bytes: u64,
    /// Client connections open at once; 0 = derived from the open-file limit (each may
    /// need a second descriptor for its upstream). When full, idle keep-alive connections
    /// are closed first; new connections are refused only when none is idle.
    pub max_connections: u64,
    /// Client connections open at once from one IP address (IPv6: one /64).
    pub max_connections_per_ip: u64,
    /// Connect timeout to an API upstream; a dead upstream answers 503 quickly.
    pub upstream_connect_timeout_ms: u64,
    /// Connections to one API worker carrying a request at once (each gateway thread
    /// keeps up to as many idle for reuse). A request beyond it waits for one, up to
    /// `upstream_connect_timeout_ms`, then gets 503.
    pub upstream_max_connections: u64,
    /// Read timeout for proxied `/api/` requests (not for upgraded streams, whose timeouts
    /// derive from `[realtime]`).
    pub upstream_read_timeout_ms: u64,
    /// Interval of active upstream health checks.
    pub health_check_interval_ms: u64,
    /// Public base URL clients should use (`/config.json`); empty = the page's own origin.
    pub public_url: String,
    /// Where `btp up` / `btp gateway` write their pid, for `btp reload`.
    pub pid_file: String,
    /// Threads serving the public listeners, each with its own runtime, copy of the
    /// listening sockets and upstream connections (thread per core); 0 = one per CPU core.
    pub threads: usize,
    /// Under `btp up`: give a plain-HTTP WebSocket connection to its API worker once the
    /// upgrade is routed (descriptor passing), instead of relaying its frames. TLS
    /// connections and workers the gateway does not supervise are always relayed.
    pub websocket_handoff: bool,
    /// Names to obtain and renew a certificate for with ACME (RFC 8555); empty = off, and
    /// `tls_cert` / `tls_key` are used. Needs `tls_listen`.
    pub acme_domains: Vec<String>,
    /// The contact address given to the certificate authority ("" = none).
    pub acme_email: String,
    /// The certificate authority's ACME directory URL.
    pub acme_directory: String,
    /// PEM file of the roots to trust for `acme_directory` (a private or test CA); "" =
    /// the usual web roots.
    pub acme_ca_roots: String,
    /// How the authority checks the names: `tls-alpn-01`, answered on `tls_listen`
    /// (reachable on port 443 under each name), or `http-01`, answered on `listen`
    /// (reachable on port 80).
    pub acme_challenge: String,
}

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The ACME challenges `gateway.acme_challenge` accepts.
pub const ACME_CHALLENGES: [&str; 2] = ["tls-alpn-01", "http-01"];

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:9100".into(),
            tls_listen: None,
            tls_cert: "certs/dev.crt".into(),
            tls_key: "certs/dev.key".into(),
            redirect_http: false,
            trusted_proxies: Vec::new(),
            max_body_bytes: 10 * 1024 * 1024,
            header_timeout_ms: 10_000,
            keepalive_timeout_ms: 75_000,
            body_timeout_ms: 60_000,
            max_header_bytes: 16 * 1024,
            max_connections: 0,
            max_connections_per_ip: 256,
            upstream_connect_timeout_ms: 1_000,
            upstream_max_connections: 256,
            upstream_read_timeout_ms: 30_000,
            health_check_interval_ms: 2_000,
            public_url: String::new(),
            pid_file: "data/btp.pid".into(),
            threads: 0,
            websocket_handoff: true,
            acme_domains: Vec::new(),
            acme_email: String::new(),
            acme_directory: LETS_ENCRYPT.into(),
            acme_ca_roots: String::new(),
            acme_challenge: "tls-alpn-01".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct StaticFiles {
    /// The web app, loaded into memory at start and on reload.
    pub root: String,
}

impl Default for StaticFiles {
    fn default() -> Self {
        StaticFiles {
            root: "static".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Api {
    /// First worker's address; worker `i` listens on port + i.
    pub listen: String,
    /// API worker processes supervised by `btp up` (more than 1 needs PostgreSQL).
    pub workers: u16,
    /// Origins allowed to make cross-origin requests (Socket.IO polling, REST) besides
    /// `gateway.public_url`: Electron's custom scheme and `null` for `file://` pages.
    pub cors_origins: Vec<String>,
    /// Longest wait between restarts of a crashing worker.
    pub restart_backoff_max_ms: u64,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: "127.0.0.1:3001".into(),
            workers: 1,
            cors_origins: vec!["app://btp".into(), "null".into(), "file://".into()],
            restart_backoff_max_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Database {
    /// `sqlite://PATH` (relative to this file's directory) or `postgres://user:pass@host/db`.
    pub url: String,
    pub max_connections: u32,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: "sqlite://data/btp.db".into(),
            max_connections: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Realtime {
    /// Engine.IO heartbeat: the server pings this often (first ping one interval after
    /// the handshake).
    pub ping_interval_ms: u64,
    /// How long the server waits for a pong before closing the session.
    pub ping_timeout_ms: u64,
    /// Largest Engine.IO payload accepted (a polling POST body, a WebSocket frame).
    pub max_payload_bytes: u64,
    /// How long a client has to join a namespace after the Engine.IO handshake.
    pub connect_timeout_ms: u64,
    /// Most bytes queued for one session's client (answers and changes it has not read
    /// yet, 64 bytes counted per packet besides its own); past it the session is closed
    /// ("buffer full"). One answer larger than this still goes out when nothing else is
    /// queued.
    pub max_buffered_bytes: u64,
    /// Most `sync:*` handlers running at once for one socket; its next event waits (and
    /// its connection is not read meanwhile), other sockets are not held up.
    pub max_inflight_events: u32,
}

impl Default for Realtime {
    fn default() -> Self {
        Realtime {
            ping_interval_ms: 25_000,
            ping_timeout_ms: 60_000,
            max_payload_bytes: 1_000_000,
            connect_timeout_ms: 45_000,
            max_buffered_bytes: 1 << 20,
            max_inflight_events: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Sync {
    /// Tombstones (and the change log) older than this are purged; a cursor older than
    /// the purge horizon gets `reset: true` and a snapshot.
    pub tombstone_retention_days: u32,
    /// Most ops accepted in one push; a larger batch is refused whole.
    pub max_batch_ops: u32,
    /// Page size of a pull when the client gives none, and the largest it may ask for.
    pub pull_limit_default: u32,
    pub pull_limit_max: u32,
}

impl Default for Sync {
    fn default() -> Self {
        Sync {
            tombstone_retention_days: 30,
            max_batch_ops: 1_000,
            pull_limit_default: 1_000,
            pull_limit_max: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Auth {
    /// Lifetime of a bearer token.
    pub token_ttl_hours: u32,
    /// Failed logins tolerated per (account, client IP) within `login_window_secs`.
    pub login_max_failures: u32,
    /// The throttling window, from an account's or IP's first failure.
    pub login_window_secs: u64,
    /// Failed logins tolerated from one client IP (an IPv6 /64) across all accounts.
    pub login_max_failures_per_ip: u32,
    /// Failed logins tolerated for one account across all IPs (distributed guessing);
    /// the only limit other people's failures can make the owner hit.
    pub login_max_failures_per_account: u32,
    /// argon2 computations (login, registration) running at once; each holds 19 MiB.
    /// 0 = one per CPU core.
    pub max_concurrent_hashes: u32,
    /// Accounts registered per client IP per hour.
    pub register_max_per_ip: u32,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            token_ttl_hours: 24 * 30,
            login_max_failures: 10,
            login_window_secs: 900,
            login_max_failures_per_ip: 100,
            login_max_failures_per_account: 100,
            max_concurrent_hashes: 0,
            register_max_per_ip: 20,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Log {
    /// `text` or `json`, for the access log and every other line.
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `btp_api=debug,info`, ...
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// The database engines the API speaks, chosen by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

impl Database {
    pub fn kind(&self) -> Option<DbKind> {
        if self.url.starts_with("sqlite:") {
            Some(DbKind::Sqlite)
        } else if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            Some(DbKind::Postgres)
        } else {
            None
        }
    }
}

impl Realtime {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Idle timeout for an upgraded (WebSocket) stream, on both the client and upstream
    /// side of the gateway. Derived, never configured: see [`TUNNEL_IDLE_MARGIN`].
    pub fn tunnel_idle_timeout(&self) -> Duration {
        self.ping_interval() + self.ping_timeout() + TUNNEL_IDLE_MARGIN
    }

    pub fn max_buffered_bytes(&self) -> usize {
        usize::try_from(self.max_buffered_bytes).unwrap_or(usize::MAX)
    }

    /// Read timeout for a long-polling GET: the server answers a pending GET at the
    /// latest with the next ping, so anything longer than one interval plus the margin
    /// means the upstream is stuck.
    pub fn polling_read_timeout(&self) -> Duration {
        self.ping_interval() + TUNNEL_IDLE_MARGIN
    }
}

impl Auth {
    /// argon2 computations allowed at once: `max_concurrent_hashes`, or the CPU count.
    pub fn hash_permits(&self) -> usize {
        match self.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }
}

impl Config {
    /// Resolve a path from the file against the config file's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn static_root(&self) -> PathBuf {
        self.resolve(&self.static_files.root)
    }

    /// The database URL with a relative SQLite path made absolute.
    pub fn database_url(&self) -> String {
        match self.database.url.strip_prefix("sqlite://") {
            Some(rest) if !rest.starts_with('/') && !rest.starts_with(':') => {
                format!("sqlite://{}", self.resolve(rest).display())
            }
            _ => self.database.url.clone(),
        }
    }

    /// Address of API worker `index` (0-based): `api.listen` with the port shifted by it.
    /// `None` if the address does not parse or the port would overflow; validation has
    /// reported that already.
    pub fn api_worker_addr(&self, index: u16) -> Option<SocketAddr> {
        let base: SocketAddr = self.api.listen.parse().ok()?;
        let port = base.port().checked_add(index)?;
        Some(SocketAddr::new(base.ip(), port))
    }

    pub fn api_worker_addrs(&self) -> Vec<SocketAddr> {
        (0..self.api.workers)
            .filter_map(|i| self.api_worker_addr(i))
            .collect()
    }

    /// Origins allowed for cross-origin requests to the API.
    pub fn allowed_origins(&self) -> Vec<String> {
        let mut origins = self.api.cors_origins.clone();
        if let Some(origin) = origin_of(&self.gateway.public_url) {
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        origins
    }
}

/// `scheme://host[:port]` of a URL, without path; `None` for an empty or odd value.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().unwrap_or_default();
    if scheme.is_empty() || host.is_empty() {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// Accept queue of an API worker's socket, whoever binds it (the supervisor of `btp up`,
/// or `btp api` alone): a whole reconnecting fleet may queue there while a worker is
/// replaced, and a burst of gateway connections must not overflow it.
pub const API_WORKER_BACKLOG: u32 = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_timeout_is_one_heartbeat_cycle_plus_margin() {
        let rt = Realtime {
            ping_interval_ms: 300,
            ping_timeout_ms: 200,
            ..Realtime::default()
        };
        assert_eq!(
            rt.tunnel_idle_timeout(),
            Duration::from_millis(500) + TUNNEL_IDLE_MARGIN
        );
    }

    #[test]
    fn worker_addresses_shift_the_port() {
        let cfg = Config {
            api: Api {
                listen: "127.0.0.1:3001".into(),
                workers: 3,
                ..Api::default()
            },
            ..Config::default()
        };
        let ports: Vec<u16> = cfg.api_worker_addrs().iter().map(|a| a.port()).collect();
        assert_eq!(ports, vec![3001, 3002, 3003]);
    }

    #[test]
    fn relative_sqlite_path_resolves_against_the_config_dir() {
        let cfg = Config {
            base_dir: PathBuf::from("/etc/btp"),
            ..Config::default()
        };
        assert_eq!(cfg.database_url(), "sqlite:///etc/btp/data/btp.db");
    }

    #[test]
    fn public_url_origin_joins_the_allowed_origins() {
        let cfg = Config {
            gateway: Gateway {
                public_url: "https://btp.example.ma/app".into(),
                ..Gateway::default()
            },
            ..Config::default()
        };
        assert_eq!(
            cfg.allowed_origins(),
            vec!["app://btp", "null", "file://", "https://btp.example.ma"]
        );
    }
}
