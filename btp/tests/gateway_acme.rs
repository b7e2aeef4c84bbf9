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
    /// The API worker's address (a fake one, where a test starts it).
    api: SocketAddr,
}

impl Site {
    fn new() -> Site {
        let dir = TempDir::new("acme");
        write_static_site(&dir, "static");
        let ports = free_ports(4);
        Site {
            dir,
            http: loopback(ports[0]),
            admin: loopback(ports[1]),
            tls: loopback(ports[2]),
            api: loopback(ports[3]),
        }
    }

    fn config(&self, pebble: &Pebble, challenge: &str) -> std::path::PathBuf {
        let api = self.api;
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
async fn a_renewal_goes_to_new_connections_while_open_ones_keep_working() {
    // Certificates for 30 s: the renewal is due 20 s after each is issued.
    let site = Site::new();
    let mut pebble =
        Pebble::start_with(&site.dir, site.http.port(), site.tls.port(), Some(30)).await;
    let config = site.config(&pebble, "tls-alpn-01");
    let _worker = support::upstream::Upstream::try_start(site.api, 0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut gw = site.start(&config).await;
    gw.wait_for_status(
        &format!("http://{}/readyz", site.admin),
        200,
        Duration::from_secs(30),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let expiry = format!("btp_gateway_certificate_expiry_timestamp_seconds{{domain=\"{DOMAIN}\"}}");
    while !site.metrics().await.contains(&expiry) {
        assert!(
            Instant::now() < deadline,
            "no certificate:\n{}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let root = pebble.root_pem().await;
    let (first, mut kept) = support::tls_connect(site.tls, root.as_bytes(), DOMAIN)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(support::get_on(&mut kept, "/app.css").await.0, 200);
    // A WebSocket over TLS, relayed to the worker, open across the renewal.
    let mut socket = support::ws::connect_tls_to(
        site.tls,
        DOMAIN,
        "/socket.io/?EIO=4&transport=websocket",
        root.as_bytes(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
    support::ws::echo(&mut socket, "before the renewal")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let account = std::fs::read(site.dir.join("data/acme/account.json")).unwrap_or_default();

    // Within the next 40 s a renewal is presented to new connections.
    let deadline = Instant::now() + Duration::from_secs(40);
    let renewed = loop {
        let (shown, _) = support::tls_connect(site.tls, root.as_bytes(), DOMAIN)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.output()));
        if shown != first {
            break shown;
        }
        assert!(Instant::now() < deadline, "no renewal:\n{}", gw.output());
        // The connection opened before keeps working meanwhile.
        assert_eq!(support::get_on(&mut kept, "/app.css").await.0, 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(!renewed.is_empty());
    // And after: the old connection still answers, on its old certificate; so does the
    // WebSocket; and the renewal was ordered with the same account.
    assert_eq!(support::get_on(&mut kept, "/app.css").await.0, 200);
    support::ws::echo(&mut socket, "after the renewal")
        .await
        .unwrap_or_else(|e| panic!("the WebSocket did not survive the renewal: {e}"));
    assert_eq!(
        std::fs::read(site.dir.join("data/acme/account.json")).unwrap_or_default(),
        account
    );
    assert_eq!(
        kept.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec()),
        Some(first)
    );
    let log = gw.output();
    assert!(
        log.matches("[ACME] certificate obtained").count() >= 2,
        "{log}"
    );

    // The authority gone, the next renewal fails: counted, retried, and the renewed
    // certificate is still presented to new connections.
    pebble.stop();
    let deadline = Instant::now() + Duration::from_secs(40);
    while !site
        .metrics()
        .await
        .contains("btp_gateway_acme_failures_total 1")
    {
        assert!(
            Instant::now() < deadline,
            "no failed renewal:\n{}",
            gw.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (shown, mut fresh) = support::tls_connect(site.tls, root.as_bytes(), DOMAIN)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(shown, renewed);
    assert_eq!(support::get_on(&mut fresh, "/app.css").await.0, 200);
    assert!(gw.output().contains("next try in 5s"));
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
