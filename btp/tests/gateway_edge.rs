//! The edge's HTTP/1 path: every request read by the gateway itself and forwarded with
//! its body. Raw client connections against a real gateway, with the test's fake workers:
//! keep-alive and pipelining with and without bodies, bodies sized, large and chunked
//! (re-framed), `Expect: 100-continue`, every response framing a worker may use, a pooled
//! connection the worker closed, late and broken answers, deadlines on heads.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::gateway::{Options, TestGateway};
use support::raw::{raw_options, RawWorker, CHUNKED_BODY};
use support::ws::{header, read_head};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_200: &str = "btp_gateway_requests_total{route=\"api\",status=\"200\"}";

async fn connect(gw: &TestGateway) -> TcpStream {
    TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: btp.test\r\n{extra}\r\n")
}

/// Exactly `n` bytes (a body whose length the test knows), within 10 s.
async fn read_exact<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Vec<u8> {
    let mut body = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut body))
        .await
        .unwrap_or_else(|_| panic!("no {n}-byte body within 10 s"))
        .unwrap_or_else(|e| panic!("reading a {n}-byte body: {e}"));
    body
}

/// One response with a `content-length` body: (head, body).
async fn response<R: AsyncRead + Unpin>(r: &mut R) -> (String, Vec<u8>) {
    let head = read_head(r).await.unwrap_or_else(|e| panic!("{e}"));
    let len = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no content-length in {head}"));
    let body = read_exact(r, len).await;
    (head, body)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// The gateway closed the connection (EOF within 10 s, nothing more sent).
async fn assert_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the gateway kept the connection open");
    assert!(
        rest.is_empty(),
        "more after the response: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_and_pipelined_requests_are_answered_in_order_with_the_gateways_headers() {
    let gw = TestGateway::start(Options::default()).await;
    let mut c = connect(&gw).await;
    c.write_all(get("/api/echo?n=1", "X-Forwarded-For: 6.6.6.6\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (head, body) = response(&mut c).await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert!(header(&head, "content-security-policy").is_some());
    let first_id = header(&head, "x-request-id")
        .unwrap_or_default()
        .to_string();
    let seen = json(&body);
    assert_eq!(seen["query"], "n=1");
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], "btp.test");
    assert_eq!(seen["headers"]["x-request-id"], first_id.as_str());
    assert_eq!(first_id.len(), 32);

    // Two requests in one write: answered in order, each with its own request id.
    let pipelined = get("/api/echo?n=2", "") + &get("/api/echo?n=3", "");
    c.write_all(pipelined.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ids = vec![first_id];
    for n in [2, 3] {
        let (head, body) = response(&mut c).await;
        assert_eq!(status(&head), 200, "{head}");
        assert_eq!(json(&body)["query"], format!("n={n}"));
        ids.push(
            header(&head, "x-request-id")
                .unwrap_or_default()
                .to_string(),
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "request ids repeat: {ids:?}");
    assert_eq!(gw.metric(API_200).await, Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_bodies_keep_the_connection_and_pipeline_with_the_others() {
    let gw = TestGateway::start(Options::default()).await;
    let mut c = connect(&gw).await;
    let sized = "POST /api/echo HTTP/1.1\r\nHost: btp.test\r\nContent-Length: 5\r\n\r\nhello";
    let chunked =
        "PATCH /api/echo HTTP/1.1\r\nHost: btp.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                   3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nx-trailer: t\r\n\r\n";
    // All four in one write: each body ends exactly where the gateway says it does.
    let all = get("/api/echo?n=1", "") + sized + chunked + &get("/api/echo?n=4", "");
    c.write_all(all.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 1..=4 {
        let (head, body) = response(&mut c).await;
        assert_eq!(status(&head), 200, "request {i}: {head}");
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        let seen = json(&body);
        match i {
            2 => assert_eq!(
                (seen["method"].as_str(), seen["body_bytes"].as_u64()),
                (Some("POST"), Some(5))
            ),
            3 => assert_eq!(
                (seen["method"].as_str(), seen["body_bytes"].as_u64()),
                (Some("PATCH"), Some(7))
            ),
            _ => assert_eq!(seen["query"], format!("n={i}")),
        }
        assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    }
    assert_eq!(gw.metric(API_200).await, Some(4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_gets_no_body_and_connection_close_is_honoured() {
    let gw = TestGateway::start(Options::default()).await;
    let mut c = connect(&gw).await;
    c.write_all(b"HEAD /api/health HTTP/1.1\r\nHost: btp.test\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = read_head(&mut c).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status(&head), 200, "{head}");
    assert!(header(&head, "content-length").is_some_and(|n| n != "0"));
    // No body: the next bytes are the next response's head.
    c.write_all(get("/api/echo", "Connection: close\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (head, body) = response(&mut c).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(json(&body)["path"], "/api/echo");
    assert!(
        json(&body)["headers"].get("connection").is_none(),
        "hop-by-hop headers are not forwarded"
    );
    assert_closed(&mut c).await;
    assert_eq!(gw.metric(API_200).await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_unsized_answers_are_relayed_whole() {
    let mut gw = TestGateway::start(raw_options()).await;
    let _worker = RawWorker::start(&mut gw).await;
    let mut c = connect(&gw).await;

    c.write_all(get("/api/chunked", "").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = read_head(&mut c).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(header(&head, "transfer-encoding"), Some("chunked"));
    assert_eq!(header(&head, "x-frame-options"), Some("DENY"));
    assert_eq!(read_exact(&mut c, CHUNKED_BODY.len()).await, CHUNKED_BODY);

    // The connection is still good after a chunked body: the relay found its end.
    c.write_all(get("/api/sized", "").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (head, body) = response(&mut c).await;
    assert_eq!(status(&head), 200, "{head}");
    assert_eq!(body, b"{\"status\":\"ok\"}");

    // No length: the body is whatever comes until the worker closes, and so the client's
    // connection closes after it.
    c.write_all(get("/api/unsized", "").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = read_head(&mut c).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut body))
        .await
        .unwrap_or_else(|_| panic!("the gateway kept the connection open"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body, b"until the end");
    assert_eq!(gw.metric(API_200).await, Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_worker_closed_is_retried_on_a_new_one() {
    let mut gw = TestGateway::start(raw_options()).await;
    let worker = RawWorker::start(&mut gw).await;
    let mut c = connect(&gw).await;
    for round in 0..2 {
        c.write_all(get("/api/flaky", "").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (head, body) = response(&mut c).await;
        assert_eq!(status(&head), 200, "round {round}: {head}");
        assert_eq!(body, b"{\"status\":\"ok\"}");
    }
    // The second request went out on the pooled connection first (which the worker
    // closed on reading it), then on a new one.
    assert_eq!(worker.requests.load(Ordering::SeqCst), 3);
    let errors = "btp_gateway_upstream_errors_total{kind=\"protocol\"}";
    assert_eq!(gw.metric(errors).await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_or_broken_answer_gets_the_json_error_and_the_connection_closes() {
    let mut gw = TestGateway::start(raw_options()).await;
    let _worker = RawWorker::start(&mut gw).await;
    for (path, want, code) in [
        ("/api/slow", 504, "upstream_timeout"),
        ("/api/garbage", 502, "bad_gateway"),
    ] {
        let mut c = connect(&gw).await;
        c.write_all(get(path, "").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (head, body) = response(&mut c).await;
        assert_eq!(status(&head), want, "{path}: {head}");
        assert_eq!(header(&head, "connection"), Some("close"));
        assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
        assert!(header(&head, "x-request-id").is_some());
        assert_eq!(json(&body)["error"]["code"], code, "{path}");
        assert_closed(&mut c).await;
    }
    let timeouts = "btp_gateway_upstream_errors_total{kind=\"timeout\"}";
    assert_eq!(gw.metric(timeouts).await, Some(1.0));
    let api_504 = "btp_gateway_requests_total{route=\"api\",status=\"504\"}";
    assert_eq!(gw.metric(api_504).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_head_left_unfinished_after_an_answered_request_is_cut_by_the_header_timeout() {
    let gw = TestGateway::start(Options {
        gateway: "header_timeout_ms = 500".into(),
        ..Options::default()
    })
    .await;
    let mut c = connect(&gw).await;
    // A whole request and the start of the next one in one write, then nothing: the
    // deadline runs from the bytes already in, not from bytes that never come.
    let start = get("/api/echo", "") + "GET /api/echo HTTP/1.1\r\nHost: btp.test\r\n";
    c.write_all(start.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (head, _) = response(&mut c).await;
    assert_eq!(status(&head), 200, "{head}");
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the unfinished head was still waited for after 5 s"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "cut too early"
    );
}
