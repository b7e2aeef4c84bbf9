//! Automatic HTTPS: the gateway obtains its certificate from an ACME authority (Debian's
//! pebble, with pebble-challtestsrv as its DNS), answers the HTTP-01 check on its plain
//! listener, presents the certificate on its TLS listener, keeps it, and presents the
//! kept one after a restart without a new order — even with the authority gone.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::pebble::Pebble;
use support::{free_ports, loopback, write_config, write_static_site, BtpProcess, TempDir};

const DOMAIN: &str = "btp.test";

struct Site {
    dir: TempDir,
    http: SocketAddr,
    admin: SocketAddr,
    tls: SocketAddr,
}

impl Site {
    fn new() -> Site {
        let dir = TempDir::new("acme");
        write_static_site(&dir, "static");
        let ports = free_ports(3);
        Site {
            dir,
            http: loopback(ports[0]),
            admin: loopback(ports[1]),
            tls: loopback(ports[2]),
        }
    }

    fn config(&self, pebble: &Pebble, challenge: &str) -> std::path::PathBuf {
        let api = loopback(free_ports(1)[0]);
        write_config(
            &self.dir,
            &format!(
                "[gateway]\nlisten = \"{}\"\nadmin_listen = \"{}\"\ntls_listen = \"{}\"\n\
                 pid_file = \"data/btp.pid\"\n\
                 acme_domains = [\"{DOMAIN}\"]\nacme_email = \"ops@btp.test\"\n\
                 acme_directory = \"{}\"\nacme_ca_roots = \"{}\"\nacme_challenge = \"{challenge}\"\n\n\
                 [static]\nroot = \"static\"\n\n[api]\nlisten = \"{api}\"\n",
                self.http,
                self.admin,
                self.tls,
                pebble.directory,
                pebble.listener_cert.display(),
            ),
        )
    }

    async fn start(&self, config: &std::path::Path) -> BtpProcess {
        let mut gw = BtpProcess::spawn(&["gateway"], config);
        gw.wait_for_status(
            &format!("http://{}/healthz", self.admin),
            200,
            Duration::from_secs(60),
        )
        .await;
        gw
    }

    /// The metrics text of the admin listener.
    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.admin)).await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// `GET /` over TLS for DOMAIN, trusting only `root_pem`: the status, the body and the
/// certificate shown.
async fn https_get(site: &Site, root_pem: &[u8]) -> Result<(u16, String, Vec<u8>), String> {
    let (shown, mut tls) = support::tls_connect(site.tls, root_pem, DOMAIN).await?;
    let (status, body) = support::get_on(&mut tls, "/").await;
    Ok((status, body, shown))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_obtained_with_tls_alpn01_kept_and_reused_after_a_restart_without_the_authority(
) {
    obtain_keep_reuse("tls-alpn-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_is_obtained_with_http01_kept_and_reused_after_a_restart_without_the_authority(
) {
    obtain_keep_reuse("http-01").await;
}

/// Order with `challenge` from pebble, serve it, keep it, and serve the kept one after a
/// restart with pebble stopped.
async fn obtain_keep_reuse(challenge: &str) {
    let site = Site::new();
    let mut pebble = Pebble::start(&site.dir, site.http.port(), site.tls.port()).await;
    let config = site.config(&pebble, challenge);
    let mut gw = site.start(&config).await;

    // The order runs while the gateway serves: the certificate arrives within seconds.
    let expiry = format!("btp_gateway_certificate_expiry_timestamp_seconds{{domain=\"{DOMAIN}\"}}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !site.metrics().await.contains(&expiry) {
        gw.assert_alive();
        assert!(
            Instant::now() < deadline,
            "no certificate after 60 s:\n{}\n--- pebble ---\n{}",
            gw.output(),
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let root = pebble.root_pem().await;
    let (status, body, first) = https_get(&site, root.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("BTP index"), "{body}");
    let log = gw.output();
    assert!(
        log.contains("[ACME] certificate obtained: btp.test valid until"),
        "{log}"
    );
    assert!(!site
        .metrics()
        .await
        .contains("btp_gateway_acme_failures_total 1"));

    // The answers are gone once the order is over; the path is the ACME client's alone.
    let resp = reqwest::get(format!(
        "http://{}/.well-known/acme-challenge/anything",
        site.http
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 404);

    // Kept privately in the data directory.
    let kept = site.dir.join("data/acme");
    for (path, want) in [
        (kept.clone(), 0o700),
        (kept.join("certificate.key"), 0o600),
        (kept.join("account.json"), 0o600),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, want, "{}", path.display());
    }

    // A restart with the authority gone: the kept certificate is presented at once.
    drop(gw);
    pebble.stop();
    let gw = site.start(&config).await;
    let (status, _, again) = https_get(&site, root.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    assert_eq!(status, 200);
    assert_eq!(again, first, "the kept certificate, not a new one");
    let log = gw.output();
    assert!(log.contains("[ACME] certificate kept in"), "{log}");
    assert!(!log.contains("[ACME] no certificate"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authority_that_cannot_be_reached_is_retried_with_backoff_while_plain_http_serves() {
    let site = Site::new();
    // An authority that is not there: nothing listens on its port.
    let dead = loopback(free_ports(1)[0]);
    let roots = site.dir.join("roots");
    let (code, out, err) =
        support::run_btp_plain(&["certs", "--dir", &roots.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let api = loopback(free_ports(1)[0]);
    let config = write_config(
        &site.dir,
        &format!(
            "[gateway]\nlisten = \"{}\"\nadmin_listen = \"{}\"\ntls_listen = \"{}\"\n\
             pid_file = \"data/btp.pid\"\nacme_domains = [\"{DOMAIN}\"]\n\
             acme_directory = \"https://{dead}/dir\"\nacme_ca_roots = \"{}\"\n\n\
             [static]\nroot = \"static\"\n\n[api]\nlisten = \"{api}\"\n",
            site.http,
            site.admin,
            site.tls,
            roots.join("dev.crt").display(),
        ),
    );
    let gw = site.start(&config).await;
    // The first try fails at once, the second 5 s later: two failures counted, and the
    // log says when the next one is.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !site
        .metrics()
        .await
        .contains("btp_gateway_acme_failures_total 2")
    {
        assert!(Instant::now() < deadline, "{}", gw.output());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = gw.output();
    assert!(log.contains("next try in 5s"), "{log}");
    assert!(log.contains("next try in 10s"), "{log}");
    // Meanwhile the plain listener serves the web app, and TLS has nothing to present.
    let resp = reqwest::get(format!("http://{}/", site.http))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let root = std::fs::read(roots.join("dev.crt")).unwrap_or_else(|e| panic!("{e}"));
    assert!(https_get(&site, &root).await.is_err());
}
