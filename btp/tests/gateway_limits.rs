//! Limits on numbers, and the TLS handshake's deadline: a gateway limited to 1,024 open
//! files keeps serving new clients while one address holds 1,100 connections (idle ones
//! make room); an address at `max_connections_per_ip` is refused while another is served;
//! a TLS handshake that stalls is cut at `header_timeout_ms`; requests beyond
//! `upstream_max_connections` wait for a connection to their worker, then get 503.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::gateway::{Options, TestGateway};
use support::raw::RawWorker;
use support::ws::{header, read_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// A connection to `to` from the loopback address `from`.
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::from(from), 0))?;
    socket.connect(to).await
}

/// `GET /api/health` on `c`: the status, or `None` if the connection was closed.
async fn health(c: &mut TcpStream) -> Option<u16> {
    c.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .ok()?;
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(c))
        .await
        .ok()?
        .ok()?;
    let len: usize = header(&head, "content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    c.read_exact(&mut body).await.ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_1024_open_files_and_1100_connections_from_one_address_a_new_client_is_served() {
    raise_nofile();
    let gw = TestGateway::start(Options {
        wrapper: vec!["prlimit".into(), "--nofile=1024".into()],
        gateway: "max_connections_per_ip = 5000\n".into(),
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..1100 {
        // Each holds its connection idle after one request, as a kept-alive browser does.
        if let Ok(mut c) = connect_from([127, 0, 0, 1], gw.http).await {
            if health(&mut c).await == Some(200) {
                held.push(c);
            }
        }
        if i % 100 == 99 {
            let started = Instant::now();
            let mut other = connect_from([127, 0, 0, 2], gw.http)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                health(&mut other).await,
                Some(200),
                "after {} connections",
                i + 1
            );
            slowest = slowest.max(started.elapsed());
        }
    }
    eprintln!("slowest answer to the other address: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a new client waited {slowest:?}"
    );
    let open = gw
        .metric("btp_gateway_connections_open")
        .await
        .unwrap_or(f64::NAN);
    let evicted = gw
        .metric("btp_gateway_connections_evicted_total")
        .await
        .unwrap_or(f64::NAN);
    assert!(open < 1024.0 / 2.0, "{open} connections open");
    assert!(
        evicted >= 500.0,
        "only {evicted} idle connections made room"
    );
    let log = gw.process.output();
    assert!(
        !log.contains("Too many open files"),
        "the gateway ran out of descriptors"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_at_its_cap_is_refused_while_another_is_served() {
    raise_nofile();
    let gw = TestGateway::start(Options {
        gateway: "max_connections_per_ip = 256\n".into(),
        ..Options::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..256 {
        let mut c = connect_from([127, 0, 0, 3], gw.http)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(health(&mut c).await, Some(200));
        held.push(c);
    }
    let mut refused = connect_from([127, 0, 0, 3], gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        health(&mut refused).await,
        None,
        "connection 257 was served"
    );
    let mut other = connect_from([127, 0, 0, 4], gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(health(&mut other).await, Some(200));
    let series = "btp_gateway_connections_refused_total{limit=\"max_connections_per_ip\"}";
    assert_eq!(gw.metric(series).await, Some(1.0));
    // One leaves: the address may connect again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from([127, 0, 0, 3], gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(health(&mut again).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_cut_at_the_header_timeout() {
    let gw = TestGateway::start(Options {
        gateway: "header_timeout_ms = 1000\n".into(),
        tls: true,
        ..Options::default()
    })
    .await;
    let tls = gw.tls.unwrap_or_else(|| panic!("no TLS listener"));
    for opening in [&b""[..], b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"] {
        let mut c = TcpStream::connect(tls)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.write_all(opening).await.unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut rest)).await;
        let after = started.elapsed();
        assert!(
            read.is_ok(),
            "a stalled handshake was still open after 10 s"
        );
        assert!(
            (Duration::from_millis(900)..Duration::from_millis(3000)).contains(&after),
            "cut after {after:?}"
        );
    }
    let series = "btp_gateway_tls_handshakes_failed_total{reason=\"timeout\"}";
    assert_eq!(gw.metric(series).await, Some(2.0));
}

/// `GET path` on a new connection: the status and the JSON error code, if any.
async fn get_status(gw: &TestGateway, path: &str) -> (u16, String) {
    let resp = reqwest::get(gw.url(path))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_upstream_max_connections_wait_for_one_and_then_get_503() {
    let mut gw = TestGateway::start(Options {
        upstreams: false,
        gateway: "upstream_max_connections = 2\nupstream_connect_timeout_ms = 500\n\
                  upstream_read_timeout_ms = 2000\n"
            .into(),
        ..Options::default()
    })
    .await;
    let worker = RawWorker::start(&mut gw).await;

    // Four requests of 300 ms each at once: two at a time reach the worker, the others
    // wait their turn (within the 500 ms connect timeout each wait is short enough).
    let started = Instant::now();
    let answers = futures::future::join_all((0..4).map(|_| get_status(&gw, "/api/pause"))).await;
    let took = started.elapsed();
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    assert_eq!(worker.most_at_once.load(Ordering::SeqCst), 2);
    assert!(
        took >= Duration::from_millis(600),
        "served in {took:?}: not two at a time"
    );
    let waits = gw.metric("btp_gateway_upstream_waits_total").await;
    assert!(waits.is_some_and(|w| w >= 2.0), "{waits:?}");

    // Two answers that never come hold both places past the connect timeout: a third
    // request gets 503 at once rather than a third connection.
    let slow = futures::future::join(get_status(&gw, "/api/slow"), get_status(&gw, "/api/slow"));
    let third = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        (get_status(&gw, "/api/sized").await, started.elapsed())
    };
    let ((a, b), ((status, code), waited)) = futures::future::join(slow, third).await;
    assert_eq!((a.0, b.0), (504, 504));
    assert_eq!((status, code.as_str()), (503, "upstream_unavailable"));
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(1500),
        "refused after {waited:?}"
    );
    assert_eq!(worker.most_at_once.load(Ordering::SeqCst), 2);
    let busy = "btp_gateway_upstream_errors_total{kind=\"busy\"}";
    assert_eq!(gw.metric(busy).await, Some(1.0));
    // The places come back: the next request is served.
    assert_eq!(get_status(&gw, "/api/sized").await.0, 200);
}
