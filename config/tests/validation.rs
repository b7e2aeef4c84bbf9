//! `btp check`'s contract: a valid file loads; every problem is reported once, located at
//! the offending key as FILE:LINE:COL, with a message an operator can act on.

use std::path::{Path, PathBuf};

use btp_config::{from_str, Config};

/// A directory with a `static/index.html`, so static-root checks pass unless a test
/// wants them to fail.
fn site() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "btp-config-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(dir.join("static")).unwrap();
    std::fs::write(dir.join("static/index.html"), "<!doctype html>").unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn problems(text: &str, dir: &Path) -> Vec<String> {
    match from_str(text, "config.toml", dir) {
        Ok(_) => Vec::new(),
        Err(p) => p.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn shipped_config_is_valid_and_equals_the_embedded_defaults() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("config.toml")).unwrap();
    let dir = site();
    let loaded = from_str(&text, "config.toml", &dir).unwrap();
    let defaults = Config {
        base_dir: dir.clone(),
        ..Config::default()
    };
    assert_eq!(loaded, defaults);
}

#[test]
fn shipped_config_documents_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("config.toml")).unwrap();
    let defaults = toml::to_string(&Config::default()).unwrap();
    let mut section = String::new();
    for line in defaults.lines() {
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').to_string();
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        let listed = text.lines().any(|l| {
            let l = l.trim_start_matches("# ").trim_start();
            l.starts_with(&format!("{key} ="))
        });
        assert!(listed, "[{section}] {key} is missing from config.toml");
    }
    assert!(
        text.contains("# tls_listen ="),
        "tls_listen must be shown commented out"
    );
}

#[test]
fn empty_file_means_every_default() {
    let dir = site();
    let cfg = from_str("", "config.toml", &dir).unwrap();
    assert_eq!(cfg.gateway.listen, "0.0.0.0:8080");
    assert_eq!(cfg.gateway.admin_listen, "127.0.0.1:9100");
    assert_eq!(cfg.database.url, "sqlite://data/btp.db");
}

#[test]
fn unknown_keys_are_each_reported_at_their_line() {
    let dir = site();
    let text = "[gateway]\nlisten = \"0.0.0.0:8080\"\nlisen = \"x\"\n\n[realtime]\nping_intervall_ms = 5\n";
    assert_eq!(
        problems(text, &dir),
        vec![
            "config.toml:3:1: unknown key `gateway.lisen`",
            "config.toml:6:1: unknown key `realtime.ping_intervall_ms`",
        ]
    );
}

#[test]
fn unknown_section_is_reported() {
    let dir = site();
    assert_eq!(
        problems("[gatway]\nlisten = \"1\"\n", &dir),
        vec!["config.toml:1:2: unknown key `gatway`"]
    );
}

#[test]
fn unparsable_address_names_the_key_and_value() {
    let dir = site();
    assert_eq!(
        problems("[gateway]\nadmin_listen = \"localhost\"\n", &dir),
        vec!["config.toml:2:1: `gateway.admin_listen` = \"localhost\" is not an address (expected IP:PORT, e.g. 127.0.0.1:8080)"]
    );
}

#[test]
fn port_collisions_between_listeners_are_errors() {
    let dir = site();
    let text = "[gateway]\nlisten = \"0.0.0.0:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n";
    assert_eq!(
        problems(text, &dir),
        vec!["config.toml:3:1: gateway.admin_listen port 8080 collides with gateway.listen (0.0.0.0:8080)"]
    );
}

#[test]
fn api_worker_port_range_collides_with_admin_port() {
    let dir = site();
    let text = "[gateway]\nadmin_listen = \"127.0.0.1:3002\"\n[api]\nlisten = \"127.0.0.1:3001\"\nworkers = 2\n[database]\nurl = \"postgres://u@localhost/db\"\n";
    assert_eq!(
        problems(text, &dir),
        vec!["config.toml:4:1: api.listen port 3002 collides with gateway.admin_listen (127.0.0.1:3002)"]
    );
}

#[test]
fn several_workers_require_postgres() {
    let dir = site();
    let p = problems("[api]\nworkers = 2\n", &dir);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("config.toml:2:1: api.workers = 2 needs PostgreSQL"),
        "{p:?}"
    );
}

#[test]
fn heartbeat_out_of_range_is_reported_per_key() {
    let dir = site();
    let text = "[realtime]\nping_interval_ms = 10\nping_timeout_ms = 9999999\n";
    assert_eq!(
        problems(text, &dir),
        vec![
            "config.toml:2:1: realtime.ping_interval_ms = 10 is out of range (50..=600000 ms)",
            "config.toml:3:1: realtime.ping_timeout_ms = 9999999 is out of range (50..=600000 ms)",
        ]
    );
}

#[test]
fn gateway_threads_out_of_range_is_reported() {
    let dir = site();
    assert_eq!(
        problems("[gateway]\nthreads = 5000\n", &dir),
        vec!["config.toml:2:1: gateway.threads = 5000 is out of range (0..=1024; 0 = one per CPU core)"]
    );
    assert!(problems("[gateway]\nthreads = 1\n", &dir).is_empty());
}

#[test]
fn missing_static_root_or_index_is_reported() {
    let dir = site();
    let missing = problems("[static]\nroot = \"nowhere\"\n", &dir);
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].starts_with("config.toml:2:1: static.root "),
        "{missing:?}"
    );
    assert!(
        missing[0].ends_with("nowhere is not a directory"),
        "{missing:?}"
    );

    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let no_index = problems("[static]\nroot = \"empty\"\n", &dir);
    assert_eq!(no_index.len(), 1);
    assert!(
        no_index[0].ends_with("empty has no index.html"),
        "{no_index:?}"
    );
}

#[test]
fn default_static_root_problem_points_at_the_top_of_the_file() {
    let dir = std::env::temp_dir().join(format!("btp-config-nostatic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = problems("", &dir);
    assert_eq!(p.len(), 1);
    assert!(p[0].starts_with("config.toml:1:1: static.root "), "{p:?}");
}

#[test]
fn unreadable_tls_material_is_reported() {
    let dir = site();
    let text = "[gateway]\ntls_listen = \"0.0.0.0:8443\"\ntls_cert = \"missing.crt\"\ntls_key = \"missing.key\"\n";
    let p = problems(text, &dir);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p[0].starts_with("config.toml:3:1: gateway.tls_cert "),
        "{p:?}"
    );
    assert!(p[0].contains("cannot read"), "{p:?}");
    assert!(
        p[1].starts_with("config.toml:4:1: gateway.tls_key "),
        "{p:?}"
    );
}

#[test]
fn wrong_type_is_a_located_error_not_a_panic() {
    let dir = site();
    let p = problems("[api]\nworkers = \"two\"\n", &dir);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("config.toml:2:11: "), "{p:?}");
}

#[test]
fn toml_syntax_error_is_located() {
    let dir = site();
    let p = problems("[gateway\nlisten = 1\n", &dir);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].starts_with("config.toml:1:"), "{p:?}");
}

#[test]
fn database_scheme_must_be_known() {
    let dir = site();
    let p = problems("[database]\nurl = \"mysql://u:pw@h/db\"\n", &dir);
    assert_eq!(
        p,
        vec!["config.toml:2:1: database.url \"mysql://***@h/db\" must start with sqlite:// or postgres://"]
    );
}

#[test]
fn tls_key_that_does_not_match_the_cert_is_reported() {
    let dir = site();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("a.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("a.key"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("b.key"), other.serialize_pem()).unwrap();
    let good =
        "[gateway]\ntls_listen = \"0.0.0.0:8443\"\ntls_cert = \"a.crt\"\ntls_key = \"a.key\"\n";
    assert_eq!(problems(good, &dir), Vec::<String>::new());
    let bad =
        "[gateway]\ntls_listen = \"0.0.0.0:8443\"\ntls_cert = \"a.crt\"\ntls_key = \"b.key\"\n";
    let p = problems(bad, &dir);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("config.toml:4:1: gateway.tls_key "),
        "{p:?}"
    );
    assert!(p[0].contains("does not match gateway.tls_cert"), "{p:?}");
}

#[test]
fn session_bounds_out_of_range_are_reported_per_key() {
    let dir = site();
    let text = "[realtime]\nmax_buffered_bytes = 100\nmax_inflight_events = 0\n";
    assert_eq!(
        problems(text, &dir),
        vec![
            "config.toml:2:1: realtime.max_buffered_bytes = 100 is out of range (4096..=1073741824)",
            "config.toml:3:1: realtime.max_inflight_events = 0 is out of range (1..=1024)",
        ]
    );
    let fine = "[realtime]\nmax_buffered_bytes = 4096\nmax_inflight_events = 1\n";
    assert!(problems(fine, &dir).is_empty());
}

#[test]
fn auth_limits_must_allow_at_least_one_attempt() {
    let dir = site();
    let text = "[auth]\nlogin_max_failures_per_ip = 0\nlogin_max_failures_per_account = 0\n\
                register_max_per_ip = 0\nmax_concurrent_hashes = 2000\n";
    assert_eq!(
        problems(text, &dir),
        vec![
            "config.toml:2:1: auth.login_max_failures_per_ip must be at least 1",
            "config.toml:3:1: auth.login_max_failures_per_account must be at least 1",
            "config.toml:4:1: auth.register_max_per_ip must be at least 1",
            "config.toml:5:1: auth.max_concurrent_hashes = 2000 is out of range (0..=1024; 0 = one per CPU core)",
        ]
    );
    assert!(problems("[auth]\nmax_concurrent_hashes = 0\n", &dir).is_empty());
}

#[test]
fn acme_settings_are_checked_where_they_are_written() {
    let dir = site();
    // A good one: no certificate files needed (the authority provides it).
    let ok = "[gateway]\ntls_listen = \"0.0.0.0:8443\"\ntls_cert = \"missing.crt\"\n\
              acme_domains = [\"btp.example.ma\", \"www.btp.example.ma\"]\n\
              acme_email = \"ops@btp.example.ma\"\n";
    assert_eq!(problems(ok, &dir), Vec::<String>::new());

    let text = "[gateway]\n\
                acme_domains = [\"btp.example.ma\", \"*.btp.example.ma\", \"10.0.0.1\", \"BTP.ma\", \"btp.example.ma\"]\n\
                acme_email = \"not an address\"\n\
                acme_directory = \"http://acme.example/dir\"\n\
                acme_ca_roots = \"missing-roots.pem\"\n\
                acme_challenge = \"dns-01\"\n";
    let got = problems(text, &dir);
    let want = [
        "config.toml:2:1: gateway.acme_domains needs gateway.tls_listen (the certificate is for it)",
        "config.toml:2:1: gateway.acme_domains: \"*.btp.example.ma\" is not a DNS name",
        "config.toml:2:1: gateway.acme_domains: \"10.0.0.1\" is not a DNS name",
        "config.toml:2:1: gateway.acme_domains: \"BTP.ma\" is not a DNS name",
        "config.toml:2:1: gateway.acme_domains: btp.example.ma is listed twice",
        "config.toml:3:1: gateway.acme_email = \"not an address\" is not an email address",
        "config.toml:4:1: gateway.acme_directory = \"http://acme.example/dir\" is not an https:// URL",
        "config.toml:5:1: gateway.acme_ca_roots ",
        "config.toml:6:1: gateway.acme_challenge = \"dns-01\": expected one of tls-alpn-01, http-01",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (got, want) in got.iter().zip(want) {
        assert!(
            got.starts_with(want),
            "{got}\n  does not start with\n{want}"
        );
    }
}
