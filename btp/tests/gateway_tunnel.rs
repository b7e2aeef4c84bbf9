//! The WebSocket tunnel path of the gateway (`/socket.io/` upgrades relayed as byte
//! tunnels): what the worker sees, what the client gets when the worker answers or is
//! missing, large frames, half-close, the tunnel gauge, and the upgrade that arrives on a
//! kept-alive connection.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use support::gateway::{Options, TestGateway};
use support::ws::{connect, header, read_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WS_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

fn upgrade_head(host: SocketAddr, extra: &str) -> String {
    format!(
        "GET {WS_PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// How the raw worker answers a `/socket.io/` request.
#[derive(Clone, Copy)]
enum Answer {
    /// `101`, then echo every byte; on EOF, send `bye` and half-close.
    Switch,
    /// `403` with a JSON body, connection kept open (as a keep-alive server would).
    Refuse,
}

const REFUSAL: &str = r#"{"error":{"code":"forbidden","message":"no"}}"#;

/// A raw HTTP/1 worker on `addr`: `/api/health` answers 200; every `/socket.io/` request
/// head is sent to the returned channel and answered as `answer` says.
async fn raw_worker(
    addr: SocketAddr,
    answer: Answer,
) -> (mpsc::UnboundedReceiver<String>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("raw worker bind {addr}: {e}"));
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(head) = read_head(&mut stream).await else {
                    return;
                };
                if head.starts_with("GET /api/health") {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    return;
                }
                let _ = tx.send(head);
                match answer {
                    Answer::Switch => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                            .await;
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = stream.write_all(b"bye").await;
                        let _ = stream.shutdown().await;
                    }
                    Answer::Refuse => {
                        let reply = format!(
                            "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{REFUSAL}",
                            REFUSAL.len()
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                        // Keep-alive: the worker would take another request here; say
                        // what, if anything, arrives after the upgrade's head.
                        let mut more = Vec::new();
                        let _ = tokio::time::timeout(
                            Duration::from_millis(500),
                            stream.read_to_end(&mut more),
                        )
                        .await;
                        if !more.is_empty() {
                            let _ = tx.send(format!("MORE:{}", String::from_utf8_lossy(&more)));
                        }
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
            });
        }
    });
    (rx, task)
}

/// A gateway fronting one raw worker, ready.
async fn gateway_with_raw_worker(
    answer: Answer,
) -> (
    TestGateway,
    mpsc::UnboundedReceiver<String>,
    tokio::task::JoinHandle<()>,
) {
    let mut gw = TestGateway::start(Options {
        upstreams: false,
        ..Options::default()
    })
    .await;
    let (heads, task) = raw_worker(gw.api, answer).await;
    let ready = gw.admin_url("/readyz");
    gw.process
        .wait_for_status(&ready, 200, Duration::from_secs(30))
        .await;
    (gw, heads, task)
}

async fn open_raw(gw: &TestGateway, extra: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .write_all(upgrade_head(gw.http, extra).as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = read_head(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (stream, head)
}

async fn read_to_end_within(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, stream.read_to_end(&mut out)).await {
        Ok(Ok(_)) => Ok(out),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err(format!(
            "still open after {within:?}, got {} bytes",
            out.len()
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_reaches_the_worker_with_forwarding_headers_and_the_clients_request_id() {
    let (gw, mut heads, _worker) = gateway_with_raw_worker(Answer::Switch).await;
    let (_stream, head) = open_raw(
        &gw,
        "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Real-IP: 6.6.6.6\r\n\
         Forwarded: for=6.6.6.6\r\nX-Request-Id: client-chosen\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let seen = tokio::time::timeout(Duration::from_secs(5), heads.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the worker saw no upgrade request"));
    assert!(
        seen.starts_with(&format!("GET {WS_PATH} HTTP/1.1\r\n")),
        "{seen}"
    );
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        Some("127.0.0.1"),
        "{seen}"
    );
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"), "{seen}");
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        Some(gw.http.to_string().as_str()),
        "{seen}"
    );
    assert_eq!(header(&seen, "x-real-ip"), None, "{seen}");
    assert_eq!(header(&seen, "forwarded"), None, "{seen}");
    assert_eq!(header(&seen, "upgrade"), Some("websocket"), "{seen}");
    assert_eq!(header(&seen, "connection"), Some("Upgrade"), "{seen}");
    let id = header(&seen, "x-request-id").unwrap_or_default();
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "an untrusted client's request id must be replaced: {seen}"
    );
    // The client's 101 carries the same id and the gateway's security headers.
    assert_eq!(header(&head, "x-request-id"), Some(id), "{head}");
    assert_eq!(
        header(&head, "x-content-type-options"),
        Some("nosniff"),
        "{head}"
    );
    assert!(header(&head, "content-security-policy").is_some(), "{head}");
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_is_relayed_with_its_body_and_the_connection_closed() {
    let (gw, _heads, _worker) = gateway_with_raw_worker(Answer::Refuse).await;
    let (mut stream, head) = open_raw(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    assert!(header(&head, "x-request-id").is_some(), "{head}");
    assert_eq!(header(&head, "x-frame-options"), Some("DENY"), "{head}");
    // The worker keeps its side open; the gateway must still end the client's.
    let body = read_to_end_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&body), REFUSAL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_without_a_healthy_worker_gets_a_503_json_error() {
    let gw = TestGateway::start(Options {
        upstreams: false,
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let (mut stream, head) = open_raw(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(
        header(&head, "content-type"),
        Some("application/json"),
        "{head}"
    );
    assert_eq!(
        header(&head, "x-content-type-options"),
        Some("nosniff"),
        "{head}"
    );
    assert!(header(&head, "x-request-id").is_some(), "{head}");
    let body = read_to_end_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(value["error"]["code"], "upstream_unavailable", "{value}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "503 took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_close_crosses_the_tunnel_both_ways() {
    let (gw, _heads, _worker) = gateway_with_raw_worker(Answer::Switch).await;
    let (mut stream, head) = open_raw(&gw, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
        .write_all(b"ping")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Our half-close reaches the worker (it answers `bye` only on EOF), and its
    // half-close reaches us (read_to_end ends), while bytes still flow after ours.
    stream.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    let got = read_to_end_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&got), "pingbye");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_frame_crosses_intact_both_ways_and_the_tunnel_gauge_follows_the_tunnel() {
    let gw = TestGateway::start(Options::default()).await;
    let mut ws = connect(gw.http, WS_PATH)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    ws.write_frame(Frame::binary(Payload::Borrowed(&big)))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let frame = tokio::time::timeout(Duration::from_secs(20), ws.read_frame())
        .await
        .unwrap_or_else(|_| panic!("no echo of 1 MiB within 20 s"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(frame.opcode, OpCode::Binary);
    assert!(
        frame.payload.as_ref() == big.as_slice(),
        "1 MiB echo differs ({} bytes)",
        frame.payload.len()
    );
    assert_eq!(gw.tunnels_open().await, Some(1));

    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.tunnels_open().await != Some(0) {
        assert!(
            Instant::now() < deadline,
            "tunnel gauge did not come back to 0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_after_a_kept_alive_request_still_works() {
    let gw = TestGateway::start(Options::default()).await;
    let mut stream = TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = format!("GET /api/health HTTP/1.1\r\nHost: {}\r\n\r\n", gw.http);
    stream
        .write_all(first.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = read_head(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    stream
        .write_all(upgrade_head(gw.http, "").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = read_head(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    ws.write_frame(Frame::text(Payload::Borrowed(b"second request")))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.read_frame())
        .await
        .unwrap_or_else(|_| panic!("no echo within 10 s"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(frame.payload.as_ref(), b"second request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_sent_after_an_upgrade_head_reach_the_worker_only_after_its_101() {
    const SMUGGLED: &str = "GET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    // Refused: the worker never sees them, as a request or at all.
    let (gw, mut heads, _worker) = gateway_with_raw_worker(Answer::Refuse).await;
    let mut stream = TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sent = upgrade_head(gw.http, "") + SMUGGLED;
    stream
        .write_all(sent.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = read_head(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(header(&head, "connection"), Some("close"), "{head}");
    read_to_end_within(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let first = tokio::time::timeout(Duration::from_secs(5), heads.recv())
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(first.starts_with("GET /socket.io/"), "{first}");
    let more = tokio::time::timeout(Duration::from_secs(1), heads.recv()).await;
    assert!(
        !matches!(&more, Ok(Some(_))),
        "the worker got more than the upgrade: {more:?}"
    );

    // Switched: they are the WebSocket's first bytes, after the 101.
    let (gw, _heads, _worker) = gateway_with_raw_worker(Answer::Switch).await;
    let mut stream = TcpStream::connect(gw.http)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sent = upgrade_head(gw.http, "") + "early";
    stream
        .write_all(sent.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let head = read_head(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut echo = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo))
        .await
        .unwrap_or_else(|_| panic!("no echo"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&echo, b"early");
}
