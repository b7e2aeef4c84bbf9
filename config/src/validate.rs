//! Semantic validation: parse, collect every unknown key, then check what the types alone
//! cannot say (addresses, port collisions, files that must exist, TLS material that must
//! match, ranges). Each problem is pinned to the key it is about, or to the section, or to
//! the top of the file when the offending value is a default the file does not mention.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};

use crate::{Config, DbKind, Problem, Problems};

/// Accepted heartbeat range, milliseconds. The low end allows the 300/200 ms conformance
/// harness; the high end keeps a dead peer from pinning resources for more than minutes.
const HEARTBEAT_MS: std::ops::RangeInclusive<u64> = 50..=600_000;
const PAYLOAD_BYTES: std::ops::RangeInclusive<u64> = 1_024..=100_000_000;
/// Per session: below a few KiB every pull answer would close its session; above a GiB
/// the bound no longer protects anything.
const BUFFERED_BYTES: std::ops::RangeInclusive<u64> = 4_096..=1 << 30;
const INFLIGHT_EVENTS: std::ops::RangeInclusive<u32> = 1..=1_024;

/// Keys earlier versions had, with what replaced them: said instead of "unknown key".
const REMOVED: [(&str, &str); 1] = [(
    "gateway.api_fast_path",
    "every HTTP/1.1 request now takes the gateway's own path; delete the line",
)];

/// Accepted `gateway.max_header_bytes`: room for a browser's head at the low end; the
/// high end is what an API worker accepts in a forwarded head.
const HEADER_BYTES: std::ops::RangeInclusive<u64> = 1_024..=btp_h1::limits::MAX_HEAD_BYTES as u64;

/// More gateway threads than this is a typo, not a machine.
const MAX_THREADS: usize = 1024;

pub(crate) fn check(text: String, file: String, base_dir: PathBuf) -> Result<Config, Problems> {
    let mut sink = Sink {
        text: &text,
        file: &file,
        problems: Vec::new(),
    };

    let tree = match DeTable::parse(&text) {
        Ok(tree) => tree,
        Err(e) => {
            sink.at(e.span().unwrap_or(0..0), e.message().trim());
            return Err(Problems(sink.problems));
        }
    };

    let mut unknown = Vec::new();
    let parsed = match toml::de::Deserializer::parse(&text) {
        Ok(de) => serde_ignored::deserialize(de, |path| unknown.push(path.to_string())),
        Err(e) => Err(e),
    };
    for key in &unknown {
        let span = key_span(tree.get_ref(), key).unwrap_or(0..0);
        match REMOVED.iter().find(|(removed, _)| removed == key) {
            Some((_, why)) => sink.at(span, &format!("`{key}` was removed: {why}")),
            None => sink.at(span, &format!("unknown key `{key}`")),
        }
    }
    let mut config: Config = match parsed {
        Ok(c) => c,
        Err(e) => {
            sink.at(e.span().unwrap_or(0..0), e.message().trim());
            return Err(Problems(sink.problems));
        }
    };
    config.base_dir = base_dir;

    let mut ctx = Ctx {
        sink,
        tree: tree.get_ref(),
    };
    ctx.semantic(&config);

    let mut problems = ctx.sink.problems;
    if problems.is_empty() {
        Ok(config)
    } else {
        problems.sort_by_key(|p| (p.line, p.col));
        Err(Problems(problems))
    }
}

struct Sink<'a> {
    text: &'a str,
    file: &'a str,
    problems: Vec<Problem>,
}

impl Sink<'_> {
    fn at(&mut self, span: Range<usize>, message: &str) {
        let (line, col) = line_col(self.text, span.start);
        self.problems.push(Problem {
            file: self.file.to_string(),
            line,
            col,
            message: message.to_string(),
        });
    }
}

struct Ctx<'a> {
    sink: Sink<'a>,
    tree: &'a DeTable<'a>,
}

impl Ctx<'_> {
    /// Report at `key` (dotted path) if the file has it, else at its section, else 1:1.
    fn report(&mut self, key: &str, message: String) {
        let span = key_span(self.tree, key)
            .or_else(|| {
                key.rsplit_once('.')
                    .and_then(|(s, _)| key_span(self.tree, s))
            })
            .unwrap_or(0..0);
        self.sink.at(span, &message);
    }

    fn semantic(&mut self, c: &Config) {
        let mut listeners: Vec<(&str, SocketAddr)> = Vec::new();
        for (key, value) in [
            ("gateway.listen", Some(&c.gateway.listen)),
            ("gateway.admin_listen", Some(&c.gateway.admin_listen)),
            ("gateway.tls_listen", c.gateway.tls_listen.as_ref()),
            ("api.listen", Some(&c.api.listen)),
        ] {
            let Some(value) = value else { continue };
            match value.parse::<SocketAddr>() {
                Ok(addr) => listeners.push((key, addr)),
                Err(_) => self.report(
                    key,
                    format!("`{key}` = {value:?} is not an address (expected IP:PORT, e.g. 127.0.0.1:8080)"),
                ),
            }
        }
        self.check_workers(c);
        self.check_collisions(c, &listeners);

        let root = c.static_root();
        if !root.is_dir() {
            self.report(
                "static.root",
                format!("static.root {} is not a directory", root.display()),
            );
        } else if !root.join("index.html").is_file() {
            self.report(
                "static.root",
                format!("static.root {} has no index.html", root.display()),
            );
        }

        if !c.gateway.acme_domains.is_empty() {
            // The certificate comes from the authority: tls_cert and tls_key are unused.
            self.check_acme(c);
        } else if c.gateway.tls_listen.is_some() {
            self.check_tls(c);
        }
        if c.gateway.tls_listen.is_none() && c.gateway.redirect_http {
            self.report(
                "gateway.redirect_http",
                "gateway.redirect_http needs gateway.tls_listen".into(),
            );
        }
        for (i, proxy) in c.gateway.trusted_proxies.iter().enumerate() {
            if !is_ip_or_cidr(proxy) {
                self.report(
                    "gateway.trusted_proxies",
                    format!(
                        "gateway.trusted_proxies[{i}] = {proxy:?} is not an IP address or CIDR"
                    ),
                );
            }
        }
        if c.gateway.threads > MAX_THREADS {
            self.report(
                "gateway.threads",
                format!(
                    "gateway.threads = {} is out of range (0..={MAX_THREADS}; 0 = one per CPU core)",
                    c.gateway.threads
                ),
            );
        }
        if c.gateway.max_body_bytes == 0 {
            self.report(
                "gateway.max_body_bytes",
                "gateway.max_body_bytes must be at least 1".into(),
            );
        }
        for (key, value) in [
            ("gateway.header_timeout_ms", c.gateway.header_timeout_ms),
            (
                "gateway.upstream_connect_timeout_ms",
                c.gateway.upstream_connect_timeout_ms,
            ),
            (
                "gateway.upstream_read_timeout_ms",
                c.gateway.upstream_read_timeout_ms,
            ),
            (
                "gateway.health_check_interval_ms",
                c.gateway.health_check_interval_ms,
            ),
            ("realtime.connect_timeout_ms", c.realtime.connect_timeout_ms),
            (
                "gateway.keepalive_timeout_ms",
                c.gateway.keepalive_timeout_ms,
            ),
            ("gateway.body_timeout_ms", c.gateway.body_timeout_ms),
            (
                "gateway.max_connections_per_ip",
                c.gateway.max_connections_per_ip,
            ),
            (
                "gateway.upstream_max_connections",
                c.gateway.upstream_max_connections,
            ),
            ("api.restart_backoff_max_ms", c.api.restart_backoff_max_ms),
        ] {
            if value == 0 {
                self.report(key, format!("{key} must be greater than 0"));
            }
        }
        if !HEADER_BYTES.contains(&c.gateway.max_header_bytes) {
            self.report(
                "gateway.max_header_bytes",
                format!(
                    "gateway.max_header_bytes = {} is out of range ({}..={})",
                    c.gateway.max_header_bytes,
                    HEADER_BYTES.start(),
                    HEADER_BYTES.end()
                ),
            );
        }
        let url = &c.gateway.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            self.report(
                "gateway.public_url",
                format!(
                    "gateway.public_url {:?} must start with http:// or https://",
                    c.gateway.public_url
                ),
            );
        }

        for (key, value) in [
            ("realtime.ping_interval_ms", c.realtime.ping_interval_ms),
            ("realtime.ping_timeout_ms", c.realtime.ping_timeout_ms),
        ] {
            if !HEARTBEAT_MS.contains(&value) {
                self.report(
                    key,
                    format!(
                        "{key} = {value} is out of range ({}..={} ms)",
                        HEARTBEAT_MS.start(),
                        HEARTBEAT_MS.end()
                    ),
                );
            }
        }
        if !PAYLOAD_BYTES.contains(&c.realtime.max_payload_bytes) {
            self.report(
                "realtime.max_payload_bytes",
                format!(
                    "realtime.max_payload_bytes = {} is out of range ({}..={})",
                    c.realtime.max_payload_bytes,
                    PAYLOAD_BYTES.start(),
                    PAYLOAD_BYTES.end()
                ),
            );
        }

        if !BUFFERED_BYTES.contains(&c.realtime.max_buffered_bytes) {
            self.report(
                "realtime.max_buffered_bytes",
                format!(
                    "realtime.max_buffered_bytes = {} is out of range ({}..={})",
                    c.realtime.max_buffered_bytes,
                    BUFFERED_BYTES.start(),
                    BUFFERED_BYTES.end()
                ),
            );
        }
        if !INFLIGHT_EVENTS.contains(&c.realtime.max_inflight_events) {
            self.report(
                "realtime.max_inflight_events",
                format!(
                    "realtime.max_inflight_events = {} is out of range ({}..={})",
                    c.realtime.max_inflight_events,
                    INFLIGHT_EVENTS.start(),
                    INFLIGHT_EVENTS.end()
                ),
            );
        }

        if c.database.kind().is_none() {
            self.report(
                "database.url",
                format!(
                    "database.url {:?} must start with sqlite:// or postgres://",
                    redact(&c.database.url)
                ),
            );
        }
        if c.database.max_connections == 0 {
            self.report(
                "database.max_connections",
                "database.max_connections must be at least 1".into(),
            );
        }
        if c.sync.tombstone_retention_days == 0 {
            self.report(
                "sync.tombstone_retention_days",
                "sync.tombstone_retention_days must be at least 1".into(),
            );
        }
        if !(1..=10_000).contains(&c.sync.max_batch_ops) {
            self.report(
                "sync.max_batch_ops",
                "sync.max_batch_ops must be within 1..=10000".into(),
            );
        }
        if c.sync.pull_limit_default == 0 || c.sync.pull_limit_default > c.sync.pull_limit_max {
            self.report(
                "sync.pull_limit_default",
                "sync.pull_limit_default must be at least 1 and at most sync.pull_limit_max".into(),
            );
        }
        if c.auth.token_ttl_hours == 0 {
            self.report(
                "auth.token_ttl_hours",
                "auth.token_ttl_hours must be at least 1".into(),
            );
        }
        for (key, value) in [
            (
                "auth.login_max_failures",
                u64::from(c.auth.login_max_failures),
            ),
            ("auth.login_window_secs", c.auth.login_window_secs),
            (
                "auth.login_max_failures_per_ip",
                u64::from(c.auth.login_max_failures_per_ip),
            ),
            (
                "auth.login_max_failures_per_account",
                u64::from(c.auth.login_max_failures_per_account),
            ),
            (
                "auth.register_max_per_ip",
                u64::from(c.auth.register_max_per_ip),
            ),
        ] {
            if value == 0 {
                self.report(key, format!("{key} must be at least 1"));
            }
        }
        if c.auth.max_concurrent_hashes > MAX_THREADS as u32 {
            self.report(
                "auth.max_concurrent_hashes",
                format!(
                    "auth.max_concurrent_hashes = {} is out of range (0..={MAX_THREADS}; 0 = one per CPU core)",
                    c.auth.max_concurrent_hashes
                ),
            );
        }
        if let Err(e) = c.log.level.parse::<LevelFilterCheck>() {
            self.report("log.level", e);
        }
    }

    fn check_workers(&mut self, c: &Config) {
        if c.api.workers == 0 || c.api.workers > 64 {
            self.report(
                "api.workers",
                format!("api.workers = {} must be within 1..=64", c.api.workers),
            );
            return;
        }
        if c.api.workers > 1 && c.database.kind() == Some(DbKind::Sqlite) {
            self.report(
                "api.workers",
                format!(
                    "api.workers = {} needs PostgreSQL: SQLite is one process's database (set database.url to postgres://...)",
                    c.api.workers
                ),
            );
        }
        if let Ok(base) = c.api.listen.parse::<SocketAddr>() {
            if base.port() == 0 || base.port().checked_add(c.api.workers - 1).is_none() {
                self.report(
                    "api.listen",
                    format!(
                        "api.listen port {} cannot host {} workers on consecutive ports",
                        base.port(),
                        c.api.workers
                    ),
                );
            }
        }
    }

    fn check_collisions(&mut self, c: &Config, listeners: &[(&str, SocketAddr)]) {
        // Every listener with the concrete ports it occupies (API workers take a range).
        let mut taken: BTreeMap<u16, Vec<(&str, SocketAddr)>> = BTreeMap::new();
        for &(key, addr) in listeners {
            let count = if key == "api.listen" {
                c.api.workers.max(1)
            } else {
                1
            };
            for i in 0..count {
                let Some(port) = addr.port().checked_add(i) else {
                    break;
                };
                if port == 0 {
                    continue;
                }
                taken
                    .entry(port)
                    .or_default()
                    .push((key, SocketAddr::new(addr.ip(), port)));
            }
        }
        for (port, users) in taken {
            for (i, &(key, addr)) in users.iter().enumerate() {
                for &(other, other_addr) in &users[..i] {
                    let overlap = addr.ip() == other_addr.ip()
                        || addr.ip().is_unspecified()
                        || other_addr.ip().is_unspecified();
                    if overlap && key != other {
                        self.report(
                            key,
                            format!("{key} port {port} collides with {other} ({other_addr})"),
                        );
                    }
                }
            }
        }
    }

    fn check_acme(&mut self, c: &Config) {
        let g = &c.gateway;
        if g.tls_listen.is_none() {
            self.report(
                "gateway.acme_domains",
                "gateway.acme_domains needs gateway.tls_listen (the certificate is for it)".into(),
            );
        }
        for (i, domain) in g.acme_domains.iter().enumerate() {
            if !is_dns_name(domain) {
                self.report(
                    "gateway.acme_domains",
                    format!("gateway.acme_domains: {domain:?} is not a DNS name (lowercase letters, digits, hyphens, dots; no wildcard, no IP address)"),
                );
            } else if g.acme_domains[..i].contains(domain) {
                self.report(
                    "gateway.acme_domains",
                    format!("gateway.acme_domains: {domain} is listed twice"),
                );
            }
        }
        if !crate::model::ACME_CHALLENGES.contains(&g.acme_challenge.as_str()) {
            self.report(
                "gateway.acme_challenge",
                format!(
                    "gateway.acme_challenge = {:?}: expected one of {}",
                    g.acme_challenge,
                    crate::model::ACME_CHALLENGES.join(", ")
                ),
            );
        }
        let https = g
            .acme_directory
            .strip_prefix("https://")
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
        if !https {
            self.report(
                "gateway.acme_directory",
                format!(
                    "gateway.acme_directory = {:?} is not an https:// URL",
                    g.acme_directory
                ),
            );
        }
        if !g.acme_email.is_empty()
            && (g.acme_email.contains(char::is_whitespace)
                || !g
                    .acme_email
                    .split_once('@')
                    .is_some_and(|(user, host)| !user.is_empty() && host.contains('.')))
        {
            self.report(
                "gateway.acme_email",
                format!(
                    "gateway.acme_email = {:?} is not an email address",
                    g.acme_email
                ),
            );
        }
        if !g.acme_ca_roots.is_empty() {
            let path = c.resolve(&g.acme_ca_roots);
            match read_certs(&path) {
                Ok(_) => {}
                Err(e) => self.report(
                    "gateway.acme_ca_roots",
                    format!("gateway.acme_ca_roots {}: {e}", path.display()),
                ),
            }
        }
    }

    fn check_tls(&mut self, c: &Config) {
        let cert_path = c.resolve(&c.gateway.tls_cert);
        let key_path = c.resolve(&c.gateway.tls_key);
        let certs = match read_certs(&cert_path) {
            Ok(certs) => Some(certs),
            Err(e) => {
                self.report(
                    "gateway.tls_cert",
                    format!("gateway.tls_cert {}: {e}", cert_path.display()),
                );
                None
            }
        };
        let key = match read_key(&key_path) {
            Ok(key) => Some(key),
            Err(e) => {
                self.report(
                    "gateway.tls_key",
                    format!("gateway.tls_key {}: {e}", key_path.display()),
                );
                None
            }
        };
        if let (Some(certs), Some(key)) = (certs, key) {
            if let Err(e) = crate::validate::server_config(certs, key) {
                self.report(
                    "gateway.tls_key",
                    format!(
                        "gateway.tls_key {} does not match gateway.tls_cert: {e}",
                        key_path.display()
                    ),
                );
            }
        }
    }
}

type Certs = Vec<rustls::pki_types::CertificateDer<'static>>;
type Key = rustls::pki_types::PrivateKeyDer<'static>;

/// A name a public certificate can be for: dot-separated labels of lowercase ASCII
/// letters, digits and inner hyphens, at most 253 bytes; not an IP address.
fn is_dns_name(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.parse::<std::net::IpAddr>().is_err() && name.split('.').all(label)
}

fn read_certs(path: &std::path::Path) -> Result<Certs, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let certs: Certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in file".into());
    }
    Ok(certs)
}

fn read_key(path: &std::path::Path) -> Result<Key, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("not a PEM private key: {e}"))?
        .ok_or_else(|| "no PEM private key in file".into())
}

/// Build the rustls server configuration the gateway serves with: TLS 1.2 and 1.3 only,
/// and a key that must match the certificate.
pub(crate) fn server_config(certs: Certs, key: Key) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
}

fn is_ip_or_cidr(s: &str) -> bool {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (s, None),
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|b| b.parse::<u8>().is_ok_and(|b| b <= max))
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The subset of tracing's filter syntax we accept: comma-separated `level` or
/// `target=level` directives.
struct LevelFilterCheck;

impl std::str::FromStr for LevelFilterCheck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
        for directive in s.split(',').map(str::trim) {
            let level = directive.rsplit('=').next().unwrap_or_default();
            if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "log.level {s:?}: {directive:?} is not one of off, error, warn, info, debug, trace (optionally target=level)"
                ));
            }
        }
        Ok(LevelFilterCheck)
    }
}

/// Span of the key at dotted `path` (`gateway.listen`) in the parsed document.
fn key_span(tree: &DeTable<'_>, path: &str) -> Option<Range<usize>> {
    let mut table = tree;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == part)?;
        if parts.peek().is_none() {
            return Some(key.span());
        }
        table = match value.get_ref() {
            DeValue::Table(t) => t,
            _ => return Some(key.span()),
        };
    }
    None
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 9), (2, 4));
    }

    #[test]
    fn cidr_and_ip_are_accepted_garbage_is_not() {
        assert!(is_ip_or_cidr("10.0.0.1"));
        assert!(is_ip_or_cidr("10.0.0.0/8"));
        assert!(is_ip_or_cidr("::1/128"));
        assert!(!is_ip_or_cidr("10.0.0.0/33"));
        assert!(!is_ip_or_cidr("proxy.local"));
    }

    #[test]
    fn database_passwords_never_reach_messages() {
        assert_eq!(redact("mysql://u:secret@h/db"), "mysql://***@h/db");
    }
}
