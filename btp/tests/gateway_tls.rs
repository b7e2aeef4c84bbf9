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
