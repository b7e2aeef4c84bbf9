//! `/api/` and `/socket.io/` through the gateway to real upstreams on loopback: what the
//! upstream sees (forwarding headers, request id), body limits, sid stickiness, fast 503s
//! without a healthy worker, slow clients, and the admin listener's metrics and probes.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::gateway::{Options, TestGateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn json(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let value = resp.json().await.unwrap_or_default();
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_reach_the_upstream_with_forwarded_headers_and_a_request_id() {
    let gw = TestGateway::start(Options::default()).await;
    let resp = client()
        .get(gw.url("/api/echo?x=1"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-prefix", "/evil")
        .header("x-request-id", "client-chosen")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let response_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        resp.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff"),
        "proxied responses carry the security headers too"
    );
    let (status, seen) = json(resp).await;
    assert_eq!(status, 200);
    let h = &seen["headers"];
    assert_eq!(seen["path"], "/api/echo");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "spoofed XFF must be dropped"
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.http.to_string());
    assert!(h.get("x-forwarded-prefix").is_none());
    let id = h["x-request-id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 32, "gateway-generated id, not the client's: {id}");
    assert_eq!(id, response_id);
}

/// Names of the process's threads, one per thread.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap_or_else(|e| panic!("{e}"));
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_threads_sizes_the_serving_runtime() {
    let gw = TestGateway::start(Options {
        gateway: "threads = 3\n".into(),
        ..Options::default()
    })
    .await;
    let resp = client()
        .get(gw.url("/api/echo"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 200);
    // One thread per shard, each with its own runtime; Pingora's runtime for the public
    // service only starts them.
    let names = thread_names(gw.process.pid());
    let mut shards: Vec<_> = names
        .iter()
        .filter(|n| n.starts_with("btp-edge-"))
        .collect();
    shards.sort();
    assert_eq!(
        shards,
        ["btp-edge-0", "btp-edge-1", "btp-edge-2"],
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "btp public").count(),
        1,
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_a_trusted_proxy_are_kept() {
    let gw = TestGateway::start(Options {
        gateway: "trusted_proxies = [\"127.0.0.0/8\"]\n".into(),
        ..Options::default()
    })
    .await;
    let resp = client()
        .get(gw.url("/api/echo"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-host", "btp.example.ma")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "edge-42")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, seen) = json(resp).await;
    let h = &seen["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "btp.example.ma");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-request-id"], "edge-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_bytes_get_413_json_declared_or_streamed() {
    let gw = TestGateway::start(Options {
        gateway: "max_body_bytes = 1024\n".into(),
        ..Options::default()
    })
    .await;
    let ok = client()
        .post(gw.url("/api/echo"))
        .body(vec![b'a'; 1000])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, seen) = json(ok).await;
    assert_eq!(status, 200);
    assert_eq!(seen["body_bytes"], 1000);

    let declared = client()
        .post(gw.url("/api/echo"))
        .body(vec![b'a'; 4096])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, err) = json(declared).await;
    assert_eq!(status, 413);
    assert_eq!(err["error"]["code"], "payload_too_large");

    // Chunked: no length up front, the gateway has to count.
    let mut stream = TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut req = b"POST /api/echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..8 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'b'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    stream
        .write_all(&req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "streamed body over the limit:\n{text}"
    );
    assert!(text.contains("payload_too_large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_healthy_upstream_the_gateway_answers_503_json_within_one_second() {
    let mut gw = TestGateway::start(Options {
        upstreams: false,
        ..Options::default()
    })
    .await;
    gw.process
        .wait_for_status(&gw.admin_url("/readyz"), 503, Duration::from_secs(10))
        .await;
    for path in [
        "/api/health",
        "/api/projects",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let started = Instant::now();
        let resp = client()
            .get(gw.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let elapsed = started.elapsed();
        let (status, err) = json(resp).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(err["error"]["code"], "upstream_unavailable", "{path}");
        assert!(elapsed < Duration::from_secs(1), "{path} took {elapsed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_is_answered_503_at_once_not_waited_on() {
    let mut gw = TestGateway::start(Options::default()).await;
    let (status, _) = json(
        client()
            .get(gw.url("/api/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(status, 200);
    gw.upstreams.clear();
    let started = Instant::now();
    let (status, err) = json(
        client()
            .get(gw.url("/api/health"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(err["error"]["code"], "upstream_unavailable");
    assert!(started.elapsed() < Duration::from_secs(1));
    gw.process
        .wait_for_status(&gw.admin_url("/readyz"), 503, Duration::from_secs(10))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_requests_with_a_sid_stick_to_the_worker_that_issued_it() {
    let gw = TestGateway::start(Options {
        workers: 3,
        ..Options::default()
    })
    .await;
    for _ in 0..6 {
        let url = gw.url("/socket.io/?EIO=4&transport=polling&sid=02AbCdEfGhIjKlMnOpQrSt");
        let (_, seen) = json(
            client()
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        assert_eq!(seen["worker"], 2);
    }
    let mut workers = HashSet::new();
    for _ in 0..6 {
        let url = gw.url("/socket.io/?EIO=4&transport=polling");
        let (_, seen) = json(
            client()
                .get(url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        workers.insert(seen["worker"].as_i64().unwrap_or(-1));
    }
    assert_eq!(
        workers.len(),
        3,
        "handshakes are spread round robin: {workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_by_the_header_timeout() {
    let gw = TestGateway::start(Options {
        gateway: "header_timeout_ms = 500\n".into(),
        ..Options::default()
    })
    .await;
    let mut stream = TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    // One header line every 200 ms: each read is quick, only the total is slow.
    let mut cut = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let line = format!("X-Slow-{i}: y\r\n");
        if stream.write_all(line.as_bytes()).await.is_err() {
            cut = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = true;
                break;
            }
            _ => {}
        }
    }
    assert!(
        cut,
        "slow client still connected after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(8));

    // A normal client is unaffected, including on a kept-alive connection whose next
    // request comes long after the first one's headers.
    let keepalive = client();
    for _ in 0..2 {
        let resp = keepalive
            .get(gw.url("/"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resp.status().as_u16(), 200);
        let _ = resp.bytes().await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_listener_serves_probes_and_valid_prometheus_metrics() {
    let gw = TestGateway::start(Options::default()).await;
    let c = client();
    for path in ["/", "/app.css", "/api/health", "/nope.js", "/config.json"] {
        let _ = c
            .get(gw.url(path))
            .header("accept-encoding", "br")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(
        c.get(gw.admin_url("/healthz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        200
    );
    assert_eq!(
        c.get(gw.admin_url("/other"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        404
    );
    // The admin port is not the public one: /metrics on the public port is a static 404.
    assert_eq!(
        c.get(gw.url("/metrics"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0),
        404
    );

    let needles = [
        // `/` and `/app.css`; `/nope.js` and `/metrics` on the public port.
        "btp_gateway_requests_total{route=\"static\",status=\"200\"} 2",
        "btp_gateway_requests_total{route=\"static\",status=\"404\"} 2",
        "btp_gateway_requests_total{route=\"api\",status=\"200\"} 1",
        "btp_gateway_requests_total{route=\"config\",status=\"200\"} 1",
        "btp_gateway_request_duration_seconds_bucket{route=\"api\"",
        "btp_gateway_static_hits_total{encoding=\"br\"} 2",
        "btp_gateway_tunnels_open 0",
        "btp_gateway_received_bytes_total",
        "btp_gateway_sent_bytes_total",
        "btp_gateway_upstream_healthy{worker=\"0\"} 1",
        "btp_gateway_upstream_errors_total{kind=\"connect\"} 0",
    ];
    // A request is counted in its logging phase, just after its response went out:
    // scrape until the last one is counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let resp = c
            .get(gw.admin_url("/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain; version=0.0.4")));
        let text = resp.text().await.unwrap_or_default();
        let missing: Vec<_> = needles.iter().filter(|n| !text.contains(*n)).collect();
        if missing.is_empty() {
            break text;
        }
        assert!(Instant::now() < deadline, "missing {missing:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let promtool = std::path::Path::new("/usr/bin/promtool");
    if promtool.exists() {
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("promtool: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            stdin
                .write_all(text.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Send raw bytes, read until the gateway closes the connection (bounded), return the text.
async fn raw_exchange(gw: &TestGateway, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "the gateway kept the connection open after answering"
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// Requests the gateway refuses before routing (an unparsable head, CONNECT) get its JSON
/// error shape and security headers, and the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_refused_before_routing_get_the_json_errors_with_security_headers() {
    let gw = TestGateway::start(Options::default()).await;
    let cases: [(&[u8], &str, &str); 3] = [
        (b"GARBAGE\r\n\r\n", "400", "bad_request"),
        (
            b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n",
            "400",
            "bad_request",
        ),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            "405",
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let text = raw_exchange(&gw, request).await;
        let shown = String::from_utf8_lossy(request);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{shown:?} answered:\n{text}"
        );
        let lower = text.to_ascii_lowercase();
        for header in [
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "x-frame-options: deny",
            "content-security-policy: default-src 'self'",
            "content-type: application/json",
        ] {
            assert!(lower.contains(header), "{shown:?}: no {header} in\n{text}");
        }
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        assert_eq!(value["error"]["code"], code, "{shown:?}: body {body:?}");
    }
}
