//! HTTP/2 streams forwarded to the workers: the same path as HTTP/1 (one upstream pool,
//! one head rewriting, one set of deadlines and failures), the body framed again both
//! ways. A hyper HTTP/2 client over TLS against a real gateway, with the test's fake
//! workers: bodies sized small and large, of unknown length, over the limit; `HEAD`;
//! every answer framing a worker may use; a pooled connection the worker closed; late,
//! broken and cut answers.

mod support;

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use support::gateway::{Options, TestGateway};
use support::h2::h2_client;
use support::raw::{raw_options, RawWorker};
use support::upstream::digest;

type Body = BoxBody<Bytes, io::Error>;

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A body of unknown length: `pieces` DATA frames of `size` bytes.
fn streamed(pieces: usize, size: usize) -> Body {
    let frames = (0..pieces).map(move |i| Ok(Frame::data(Bytes::from(pattern(size, i)))));
    StreamBody::new(futures::stream::iter(frames)).boxed()
}

/// `n` bytes that differ by `seed`.
fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + seed * 7) as u8).collect()
}

fn request(method: &str, path: &str, body: Body) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .body(body)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Send `req`; its answer whole, within 10 s: (status, headers, body), or the error the
/// stream ended with.
async fn send(
    client: &mut SendRequest<Body>,
    req: Request<Body>,
) -> Result<(u16, HeaderMap, Bytes), String> {
    let exchange = async {
        let resp = client.send_request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?;
        Ok((parts.status.as_u16(), parts.headers, body.to_bytes()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("no HTTP/2 answer within 10 s"))
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

fn tls_options(gateway: &str) -> Options {
    Options {
        tls: true,
        gateway: gateway.into(),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_bodies_reach_the_worker_whole_framed_by_the_gateway() {
    let gw = TestGateway::start(tls_options("max_body_bytes = 1000000")).await;
    let mut client = h2_client(&gw).await;

    // Sized: small (read whole, sent with the head) and large (streamed).
    for size in [1_000, 300_000] {
        let body = pattern(size, 1);
        let mut req = request("POST", "/api/echo", full(body.clone()));
        req.headers_mut().insert(
            "content-length",
            size.to_string().parse().unwrap_or_else(|e| panic!("{e}")),
        );
        let (status, _, answer) = send(&mut client, req)
            .await
            .unwrap_or_else(|e| panic!("{size}: {e}"));
        assert_eq!(status, 200, "{size}");
        let seen = json(&answer);
        assert_eq!(seen["body_bytes"], size, "{size}");
        assert_eq!(seen["body_digest"], digest(&body), "{size}");
        assert_eq!(seen["headers"]["content-length"], size.to_string());
        assert!(seen["headers"].get("transfer-encoding").is_none());
    }

    // Unknown length: chunks to the worker.
    let (status, _, answer) = send(
        &mut client,
        request("PUT", "/api/echo", streamed(20, 10_000)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
    let seen = json(&answer);
    let sent: Vec<u8> = (0..20).flat_map(|i| pattern(10_000, i)).collect();
    assert_eq!(seen["method"], "PUT");
    assert_eq!(seen["body_bytes"], sent.len());
    assert_eq!(seen["body_digest"], digest(&sent));
    assert_eq!(seen["headers"]["transfer-encoding"], "chunked");

    // Over max_body_bytes: declared (refused before a byte is read) and streamed.
    let mut declared = request("POST", "/api/echo", full(pattern(1_000_001, 2)));
    declared.headers_mut().insert(
        "content-length",
        "1000001".parse().unwrap_or_else(|e| panic!("{e}")),
    );
    let too_large = [
        declared,
        request("POST", "/api/echo", streamed(11, 100_000)),
    ];
    for req in too_large {
        // A fresh connection: the gateway may reset the rest of the refused body.
        let mut client = h2_client(&gw).await;
        let (status, headers, answer) = send(&mut client, req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(status, 413);
        assert_eq!(json(&answer)["error"]["code"], "payload_too_large");
        assert!(headers.get("x-request-id").is_some());
        assert!(headers.get("strict-transport-security").is_some());
    }

    // HEAD: the worker's head, no body.
    let (status, headers, answer) = send(&mut client, request("HEAD", "/api/echo", empty()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((status, answer.len()), (200, 0));
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_carry_the_forwarding_headers_every_path_sends() {
    let gw = TestGateway::start(tls_options("")).await;
    let mut client = h2_client(&gw).await;
    let mut req = request("GET", "/api/echo?x=1", empty());
    for (name, value) in [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x-request-id", "spoof"),
        ("accept", "application/json"),
    ] {
        req.headers_mut()
            .insert(name, value.parse().unwrap_or_else(|e| panic!("{e}")));
    }
    let (status, headers, answer) = send(&mut client, req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
    let seen = json(&answer);
    let got = |name: &str| seen["headers"][name].as_str().map(str::to_string);
    assert_eq!(seen["query"], "x=1");
    assert_eq!(got("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(got("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(got("host").as_deref(), Some("localhost"));
    assert_eq!(got("x-real-ip"), None);
    assert_eq!(got("accept").as_deref(), Some("application/json"));
    // The id the worker saw is the one the client gets, and not the client's.
    let id = got("x-request-id").unwrap_or_default();
    assert_eq!(id.len(), 32);
    assert_eq!(headers["x-request-id"], id.as_str());
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_framing_comes_back_as_data_frames_and_broken_answers_fail_as_on_http1() {
    let mut gw = TestGateway::start(Options {
        tls: true,
        ..raw_options()
    })
    .await;
    let worker = RawWorker::start(&mut gw).await;
    let mut client = h2_client(&gw).await;

    for (path, body) in [
        ("/api/chunked", &b"hello world"[..]),
        ("/api/unsized", b"until the end"),
        ("/api/sized", b"{\"status\":\"ok\"}"),
    ] {
        let (status, headers, answer) = send(&mut client, request("GET", path, empty()))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!((status, &answer[..]), (200, body), "{path}");
        assert!(headers.get("transfer-encoding").is_none(), "{path}");
        assert_eq!(headers["x-frame-options"], "DENY");
    }

    // Every pooled connection here has served a request already, so the worker closes it
    // on reading this one: each round goes out twice, the second time on a new one.
    let before = worker.requests.load(Ordering::SeqCst);
    for round in 0..2 {
        let (status, _, _) = send(&mut client, request("GET", "/api/flaky", empty()))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(status, 200, "round {round}");
    }
    assert_eq!(worker.requests.load(Ordering::SeqCst) - before, 4);

    for (path, want, code) in [
        ("/api/slow", 504, "upstream_timeout"),
        ("/api/garbage", 502, "bad_gateway"),
    ] {
        let (status, headers, answer) = send(&mut client, request("GET", path, empty()))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(status, want, "{path}");
        assert_eq!(json(&answer)["error"]["code"], code, "{path}");
        assert!(headers.get("x-request-id").is_some());
    }

    // A body that breaks off after its head went out: the stream is reset, never ended
    // as if whole.
    let cut = send(&mut client, request("GET", "/api/cut", empty())).await;
    assert!(cut.is_err(), "a cut body arrived as a whole one: {cut:?}");
    // The connection carries on.
    let (status, _, _) = send(&mut client, request("GET", "/api/sized", empty()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);

    let timeouts = "btp_gateway_upstream_errors_total{kind=\"timeout\"}";
    assert_eq!(gw.metric(timeouts).await, Some(1.0));
    let protocol = "btp_gateway_upstream_errors_total{kind=\"protocol\"}";
    assert_eq!(gw.metric(protocol).await, Some(2.0), "garbage and cut");
    let api_504 = "btp_gateway_requests_total{route=\"api\",status=\"504\"}";
    assert_eq!(gw.metric(api_504).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_that_stalls_gets_408_at_the_body_timeout() {
    let gw = TestGateway::start(tls_options("body_timeout_ms = 1000")).await;
    let mut client = h2_client(&gw).await;
    // Sized (read whole before the worker is asked) and of unknown length (streamed).
    for declared in [Some("5000"), None] {
        let first = futures::stream::iter([Ok(Frame::data(Bytes::from_static(b"start")))]);
        let stalled = StreamBody::new(futures::StreamExt::chain(first, futures::stream::pending()));
        let mut req = request("POST", "/api/echo", stalled.boxed());
        if let Some(length) = declared {
            req.headers_mut().insert(
                "content-length",
                length.parse().unwrap_or_else(|e| panic!("{e}")),
            );
        }
        let started = std::time::Instant::now();
        let (status, _, answer) = send(&mut client, req)
            .await
            .unwrap_or_else(|e| panic!("{declared:?}: {e}"));
        assert_eq!(status, 408, "{declared:?}");
        assert_eq!(json(&answer)["error"]["code"], "request_timeout");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "{declared:?}: answered after {waited:?}"
        );
    }
}
