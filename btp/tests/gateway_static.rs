//! The web app as the gateway serves it: in-memory files with precompressed variants,
//! revalidation, cache policy, SPA fallback rules, `/config.json`, security headers on
//! every response, and no way out of `static.root`.

mod support;

use std::time::Duration;

use reqwest::header::HeaderMap;
use support::gateway::{Options, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
font-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; \
frame-ancestors 'none'; form-action 'self'";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn assert_security_headers(h: &HeaderMap) {
    assert_eq!(header(h, "x-content-type-options"), "nosniff");
    assert_eq!(header(h, "x-frame-options"), "DENY");
    assert_eq!(header(h, "referrer-policy"), "no-referrer");
    assert_eq!(header(h, "content-security-policy"), CSP);
    assert!(
        h.get("strict-transport-security").is_none(),
        "no HSTS over plain HTTP"
    );
}

async fn get(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Vec<u8>) {
    let mut req = client().get(gw.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    (status, h, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_files_have_type_etag_cache_policy_and_security_headers() {
    let gw = TestGateway::start(Options::default()).await;

    let (status, h, body) = get(&gw, "/app.css", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "text/css; charset=utf-8");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert!(header(&h, "etag").starts_with('"'));
    assert!(!header(&h, "x-request-id").is_empty());
    assert!(body.starts_with(b"body { margin: 0;"));
    assert_security_headers(&h);

    let (status, h, body) = get(&gw, "/", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert!(String::from_utf8_lossy(&body).contains("BTP index"));

    let (status, h, _) = get(&gw, "/js/app.3f2a9c1b.js", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&h, "content-type"), "text/javascript; charset=utf-8");

    let (status, h, body) = get(&gw, "/logo.png", &[("accept-encoding", "br, gzip")]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-type"), "image/png");
    assert!(
        h.get("content-encoding").is_none(),
        "images are not recompressed"
    );
    assert_eq!(body.len(), 8);

    let (status, _, body) = get(&gw, "/docs/", &[]).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("docs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_encoding_selects_brotli_then_gzip_with_vary_and_etag_revalidates_to_304() {
    let gw = TestGateway::start(Options::default()).await;
    let (_, plain_h, plain) = get(&gw, "/js/app.3f2a9c1b.js", &[]).await;
    let (_, br_h, br) = get(
        &gw,
        "/js/app.3f2a9c1b.js",
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    let (_, gz_h, gz) = get(&gw, "/js/app.3f2a9c1b.js", &[("accept-encoding", "gzip")]).await;

    assert!(plain_h.get("content-encoding").is_none());
    assert_eq!(header(&br_h, "content-encoding"), "br");
    assert_eq!(header(&gz_h, "content-encoding"), "gzip");
    assert!(gz.starts_with(&[0x1f, 0x8b]), "gzip magic");
    assert!(br.len() < plain.len() && gz.len() < plain.len());
    for h in [&plain_h, &br_h, &gz_h] {
        assert_eq!(header(h, "vary"), "Accept-Encoding");
    }
    let etags = [
        header(&plain_h, "etag"),
        header(&br_h, "etag"),
        header(&gz_h, "etag"),
    ];
    assert!(etags[0] != etags[1] && etags[1] != etags[2] && etags[0] != etags[2]);

    let (status, h, body) = get(
        &gw,
        "/js/app.3f2a9c1b.js",
        &[
            ("accept-encoding", "br"),
            ("if-none-match", header(&br_h, "etag")),
        ],
    )
    .await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&h, "etag"), header(&br_h, "etag"));

    let (status, _, _) = get(
        &gw,
        "/js/app.3f2a9c1b.js",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_headers_without_a_body() {
    let gw = TestGateway::start(Options::default()).await;
    let resp = client()
        .head(gw.url("/app.css"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 200);
    let len: usize = header(resp.headers(), "content-length")
        .parse()
        .unwrap_or(0);
    assert!(len > 100);
    assert!(resp.bytes().await.unwrap_or_default().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spa_fallback_serves_index_only_for_html_navigations() {
    let gw = TestGateway::start(Options::default()).await;
    let html = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");

    let (status, h, body) = get(&gw, "/projects/42", &[html]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert!(String::from_utf8_lossy(&body).contains("BTP index"));
    // The entry page has the browser fetch the configuration alongside its modules.
    let preload = "</config.json>; rel=preload; as=fetch; crossorigin=anonymous";
    assert_eq!(header(&h, "link"), preload);
    let (_, h, _) = get(&gw, "/", &[html]).await;
    assert_eq!(header(&h, "link"), preload);
    let (status, h, _) = get(&gw, "/app.css", &[]).await;
    assert_eq!(
        (status, h.get("link")),
        (200, None),
        "only the entry page preloads it"
    );

    let (status, _, _) = get(&gw, "/projects/42", &[("accept", "application/json")]).await;
    assert_eq!(status, 404, "non-navigation requests do not fall back");

    for missing in ["/js/missing.js", "/missing.css", "/img/missing.png"] {
        let (status, h, body) = get(&gw, missing, &[html]).await;
        assert_eq!(status, 404, "{missing}");
        assert_eq!(header(&h, "content-type"), "application/json", "{missing}");
        assert!(
            !String::from_utf8_lossy(&body).contains("<html"),
            "{missing} must never be HTML"
        );
        assert_security_headers(&h);
    }

    // /api/ and /socket.io/ are the upstream's, whatever the client accepts.
    let (status, _, body) = get(&gw, "/api/unknown", &[html]).await;
    assert_eq!(status, 404);
    assert!(!String::from_utf8_lossy(&body).contains("BTP index"));
    let (status, _, body) = get(&gw, "/socket.io/?EIO=4&transport=polling", &[html]).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("polling"));

    let resp = client()
        .post(gw.url("/projects/42"))
        .body("x")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status().as_u16(), 405);
}

/// Send `GET <target>` byte for byte (no client-side normalization) and return the
/// status code and body.
async fn raw_get(addr: std::net::SocketAddr, target: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(
        b" HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\nConnection: close\r\n\r\n",
    );
    stream
        .write_all(&req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_in_any_form_is_refused_and_nothing_outside_the_root_is_read() {
    let gw = TestGateway::start(Options::default()).await;
    // Next to static/, i.e. exactly one `..` away from the root.
    gw.dir.write("secret.txt", "TOP-SECRET-CONTENT");
    let attempts: &[&[u8]] = &[
        b"/../secret.txt",
        b"/../../secret.txt",
        b"/js/../../secret.txt",
        b"/./../secret.txt",
        b"//../secret.txt",
        b"/%2e%2e/secret.txt",
        b"/%2E%2E/secret.txt",
        b"/.%2e/secret.txt",
        b"/%2e%2e%2fsecret.txt",
        b"/..%2fsecret.txt",
        b"/..%2Fsecret.txt",
        b"/..%5csecret.txt",
        b"/..%5Csecret.txt",
        b"/..\\secret.txt",
        b"/js\\..\\..\\secret.txt",
        b"/%c0%ae%c0%ae/secret.txt",
        b"/%c0%ae%c0%ae%c0%afsecret.txt",
        b"/%e0%80%ae%e0%80%ae/secret.txt",
        b"/index.html%00.js",
        b"/secret.txt%00",
        b"/api/..%2f..%2fsecret.txt",
        b"/socket.io/%2e%2e/%2e%2e/secret.txt",
    ];
    for target in attempts {
        let shown = String::from_utf8_lossy(target);
        let (status, text) = raw_get(gw.http, target).await;
        assert!(
            status == 400 || status == 404,
            "{shown} answered {status}:\n{text}"
        );
        assert!(!text.contains("TOP-SECRET"), "{shown} leaked the file");
        assert!(!text.contains("BTP index"), "{shown} fell back to the SPA");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_json_is_generated_from_config_toml_and_never_cached() {
    let gw = TestGateway::start(Options {
        gateway: "public_url = \"https://btp.example.ma\"\n".into(),
        realtime: "ping_interval_ms = 20000\nping_timeout_ms = 40000\n".into(),
        ..Options::default()
    })
    .await;
    let (status, h, body) = get(&gw, "/config.json", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert_eq!(header(&h, "content-type"), "application/json");
    assert_security_headers(&h);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(doc["apiUrl"], "https://btp.example.ma");
    assert_eq!(doc["realtimePath"], "/socket.io/");
    assert_eq!(doc["transports"], serde_json::json!(["websocket"]));
    assert_eq!(doc["pingIntervalMs"], 20000);
    assert_eq!(doc["pingTimeoutMs"], 40000);
    assert!(doc["version"].as_str().is_some_and(|v| !v.is_empty()));
    let assets = doc["assetsVersion"].as_str().unwrap_or_default();
    assert!(
        assets.len() == 16 && assets.bytes().all(|b| b.is_ascii_hexdigit()),
        "{doc}"
    );
}
