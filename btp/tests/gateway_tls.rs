//! The HTTPS listener: rustls with the dev certificate `btp certs` writes, HTTP/2 through
//! ALPN (HTTP/1.1 still offered), HSTS on TLS responses, TLS 1.2 and 1.3, and the optional
//! 308 from plain HTTP.

mod support;

use std::time::Duration;

use support::gateway::{Options, TestGateway};

fn tls_client(gw: &TestGateway, version: Option<reqwest::tls::Version>) -> reqwest::Client {
    let pem =
        std::fs::read(gw.dir.join("certs/dev.crt")).unwrap_or_else(|e| panic!("dev.crt: {e}"));
    let cert = reqwest::Certificate::from_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
    let tls = gw
        .tls
        .unwrap_or_else(|| panic!("fixture has no TLS listener"));
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .resolve("localhost", tls)
        .timeout(Duration::from_secs(10));
    if let Some(v) = version {
        builder = builder.min_tls_version(v).max_tls_version(v);
    }
    builder.build().unwrap_or_else(|e| panic!("{e}"))
}

fn https(gw: &TestGateway, path: &str) -> String {
    let port = gw.tls.map(|a| a.port()).unwrap_or_default();
    format!("https://localhost:{port}{path}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_dev_certificate_negotiates_http2_and_sends_hsts() {
    let gw = TestGateway::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let client = tls_client(&gw, None);

    let resp = client
        .get(https(&gw, "/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "ALPN must select h2"
    );
    let hsts = resp
        .headers()
        .get("strict-transport-security")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        hsts.starts_with("max-age="),
        "HSTS on TLS responses: {hsts:?}"
    );
    assert!(resp.text().await.unwrap_or_default().contains("BTP index"));

    // h2 downstream, HTTP/1.1 upstream: proxying still works and says it came over TLS.
    let resp = client
        .get(https(&gw, "/api/echo"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.headers().get("strict-transport-security").is_some());
    let seen: serde_json::Value = resp.json().await.unwrap_or_default();
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    for version in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let resp = tls_client(&gw, Some(version))
            .get(https(&gw, "/app.css"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "{version:?}");
    }

    // Plain HTTP keeps working (no redirect configured) and carries no HSTS.
    let resp = reqwest::get(gw.url("/"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().get("strict-transport-security").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https_with_308_when_configured() {
    let gw = TestGateway::start(Options {
        tls: true,
        gateway: "redirect_http = true\n".into(),
        ..Options::default()
    })
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let resp = client
        .post(gw.url("/api/projects?x=1"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 308, "308 keeps the method and body");
    let tls_port = gw.tls.map(|a| a.port()).unwrap_or_default();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(
        location,
        format!("https://{}:{tls_port}/api/projects?x=1", gw.http.ip())
    );

    let resp = tls_client(&gw, None)
        .get(https(&gw, "/"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
}

/// The production path: Socket.IO over `wss://` through the TLS listener reaches the worker
/// and back, including a frame larger than one TLS record (16 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_over_tls_echoes_through_the_gateway() {
    let gw = TestGateway::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let pem =
        std::fs::read(gw.dir.join("certs/dev.crt")).unwrap_or_else(|e| panic!("dev.crt: {e}"));
    let tls = gw
        .tls
        .unwrap_or_else(|| panic!("fixture has no TLS listener"));
    let mut ws = support::ws::connect_tls(tls, "/socket.io/?EIO=4&transport=websocket", &pem)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for text in ["over tls".to_string(), "y".repeat(100_000)] {
        support::ws::echo(&mut ws, &text)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(gw.tunnels_open().await, Some(1), "one open tunnel expected");
}

/// A TLS connection to the gateway for `localhost`, trusting only `ca_pem`: the
/// certificate it was shown, and the stream.
async fn tls_connect(
    gw: &TestGateway,
    ca_pem: &[u8],
) -> (
    Vec<u8>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let addr = gw.tls.unwrap_or_else(|| panic!("no TLS listener"));
    support::tls_connect(addr, ca_pem, "localhost")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The DER of the (first) certificate in a PEM file.
fn der_of(pem_path: &std::path::Path) -> Vec<u8> {
    let pem = std::fs::read(pem_path).unwrap_or_else(|e| panic!("{}: {e}", pem_path.display()));
    let first = rustls_pemfile::certs(&mut pem.as_slice()).next();
    match first {
        Some(Ok(cert)) => cert.as_ref().to_vec(),
        _ => panic!("no certificate in {}", pem_path.display()),
    }
}

/// Send SIGHUP (what `btp reload` sends) and wait for the reload's outcome to be counted.
async fn reload(gw: &TestGateway, result: &str, count: f64) {
    let pid = nix::unistd::Pid::from_raw(gw.process.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
        .unwrap_or_else(|e| panic!("SIGHUP: {e}"));
    let series = format!("btp_gateway_reloads_total{{result=\"{result}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while gw.metric(&series).await != Some(count) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {series} = {count} after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_presents_renewed_certificate_files_to_new_connections_only_and_refuses_a_mismatched_pair(
) {
    let gw = TestGateway::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let (cert, key) = (gw.dir.join("certs/dev.crt"), gw.dir.join("certs/dev.key"));
    let first_pem = std::fs::read(&cert).unwrap_or_else(|e| panic!("{e}"));
    let first = der_of(&cert);
    let (shown, mut kept) = tls_connect(&gw, &first_pem).await;
    assert_eq!(shown, first);
    assert_eq!(support::get_on(&mut kept, "/app.css").await.0, 200);
    let expiry = "btp_gateway_certificate_expiry_timestamp_seconds{domain=\"localhost\"}";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    assert!(gw.metric(expiry).await.is_some_and(|t| t > now), "{expiry}");

    // Renewed in place (what certbot's deploy hook leaves), then `btp reload`.
    let renewed = gw.dir.join("renewed");
    let (code, out, err) =
        support::run_btp_plain(&["certs", "--dir", &renewed.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::copy(renewed.join("dev.key"), &key).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(renewed.join("dev.crt"), &cert).unwrap_or_else(|e| panic!("{e}"));
    let second_pem = std::fs::read(&cert).unwrap_or_else(|e| panic!("{e}"));
    let second = der_of(&cert);
    assert_ne!(first, second);
    reload(&gw, "ok", 1.0).await;

    let (shown, mut fresh) = tls_connect(&gw, &second_pem).await;
    assert_eq!(
        shown, second,
        "a new connection gets the renewed certificate"
    );
    assert_eq!(support::get_on(&mut fresh, "/app.css").await.0, 200);
    // The connection made before the reload is untouched: it still answers.
    assert_eq!(support::get_on(&mut kept, "/app.css").await.0, 200);
    assert!(gw.metric(expiry).await.is_some_and(|t| t > now));

    // A certificate with another key's file: refused, the renewed one stays.
    let (code, out, err) = support::run_btp_plain(&[
        "certs",
        "--dir",
        &gw.dir.join("other").display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    std::fs::copy(gw.dir.join("other/dev.crt"), &cert).unwrap_or_else(|e| panic!("{e}"));
    reload(&gw, "failed", 1.0).await;
    let (shown, mut again) = tls_connect(&gw, &second_pem).await;
    assert_eq!(shown, second, "the running certificate is kept");
    assert_eq!(support::get_on(&mut again, "/app.css").await.0, 200);
    assert_eq!(support::get_on(&mut fresh, "/app.css").await.0, 200);
    let log = gw.process.output();
    assert!(log.contains("does not match gateway.tls_cert"), "{log}");
    assert!(log.contains("[RELOAD] FAILED"), "{log}");
}
