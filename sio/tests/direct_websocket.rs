//! WebSocket requests taken straight off a connection's first bytes (`btp_sio::sniff`,
//! `handle_websocket`), on the real harness over loopback: what the sniff leaves to
//! hyper still works, nothing the client sent after its head is lost, and a refused
//! request gets the same JSON error as through hyper, then the connection closes.
//! The conformance suite runs whole on this path too (the in-process harness takes it).
//!
//! Also here, because it needs a raw socket: a frame that arrives in pieces while the
//! session's driver is woken in between (to write a heartbeat ping) arrives whole.

use std::time::Duration;

use btp_sio::harness::{self, Upgrades};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(5);

async fn harness(upgrades: Upgrades) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr").to_string();
    let config = harness::config();
    let sio = harness::socketio(config.clone());
    let eio = harness::engine(config);
    tokio::spawn(harness::serve(
        listener,
        sio,
        eio,
        upgrades,
        std::future::pending(),
    ));
    addr
}

fn upgrade_head(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A client text frame (masked, as clients must; the zero key keeps it readable).
fn client_text(payload: &str) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload.as_bytes());
    frame
}

/// Reads until `bytes` holds `needle` (or the peer closes, or patience runs out).
async fn read_until(stream: &mut TcpStream, bytes: &mut Vec<u8>, needle: &[u8]) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !bytes.windows(needle.len()).any(|w| w == needle) {
        let mut buf = [0; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

/// The Engine.IO open packet's sid in a server frame stream.
fn sid(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.find("\"sid\":\"").expect("an open packet") + 7;
    text[start..].split('"').next().expect("sid").to_owned()
}

#[tokio::test]
async fn a_frame_sent_right_behind_the_head_is_not_lost() {
    let addr = harness(Upgrades::Direct).await;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // Head and first message in one write, before the 101 could be read.
    let mut sent = upgrade_head("/engine.io/?EIO=4&transport=websocket").into_bytes();
    sent.extend(client_text("4ahead"));
    stream.write_all(&sent).await.expect("write");
    let mut got = Vec::new();
    assert!(read_until(&mut stream, &mut got, b"\r\n\r\n").await);
    assert!(got.starts_with(b"HTTP/1.1 101 "), "{got:?}");
    assert!(
        read_until(&mut stream, &mut got, b"4ahead").await,
        "the echo of the early message: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn a_head_split_over_segments_is_served_through_hyper() {
    let addr = harness(Upgrades::Direct).await;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let head = upgrade_head("/socket.io/?EIO=4&transport=websocket");
    let (first, rest) = head.split_at(40);
    stream.write_all(first.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(rest.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    assert!(read_until(&mut stream, &mut got, b"\"sid\"").await);
    assert!(got.starts_with(b"HTTP/1.1 101 "), "{got:?}");
    // hyper writes a Date header; the direct path does not on a 101.
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(head.contains("\r\ndate: "), "{head}");
}

#[tokio::test]
async fn a_refused_request_gets_the_json_error_and_the_connection_closes() {
    for upgrades in [Upgrades::Direct, Upgrades::Hyper] {
        let addr = harness(upgrades).await;
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        // A sid no session has: 400, Engine.IO code 1.
        let head = upgrade_head("/socket.io/?EIO=4&transport=websocket&sid=nope");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        assert!(
            read_until(&mut stream, &mut got, b"}").await,
            "{upgrades:?}"
        );
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 400 bad request\r\n"), "{text}");
        assert!(
            text.contains("\r\ncontent-type: application/json\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\ndate: "), "{text}");
        assert!(
            text.ends_with("\r\n\r\n{\"code\":1,\"message\":\"session id unknown\"}"),
            "{text}"
        );
        if upgrades == Upgrades::Direct {
            assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
            let mut rest = [0; 16];
            let closed = tokio::time::timeout(PATIENCE, stream.read(&mut rest)).await;
            assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
        }
    }
}

#[tokio::test]
async fn an_upgrade_from_polling_is_taken_directly_too() {
    let addr = harness(Upgrades::Direct).await;
    // Open a polling session over plain HTTP.
    let mut polling = TcpStream::connect(&addr).await.expect("connect");
    polling
        .write_all(b"GET /engine.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    assert!(read_until(&mut polling, &mut got, b"\"maxPayload\"").await);
    let sid = sid(&got);
    // Upgrade it on a fresh connection: probe, upgrade, then a message.
    let mut ws = TcpStream::connect(&addr).await.expect("connect");
    let head = upgrade_head(&format!("/engine.io/?EIO=4&transport=websocket&sid={sid}"));
    ws.write_all(head.as_bytes()).await.expect("write");
    ws.write_all(&client_text("2probe")).await.expect("probe");
    let mut got = Vec::new();
    assert!(read_until(&mut ws, &mut got, b"3probe").await, "{got:?}");
    assert!(!String::from_utf8_lossy(&got)
        .to_ascii_lowercase()
        .contains("\r\ndate: "));
    ws.write_all(&client_text("5")).await.expect("upgrade");
    ws.write_all(&client_text("4after")).await.expect("message");
    assert!(read_until(&mut ws, &mut got, b"4after").await, "{got:?}");
}

#[tokio::test]
async fn a_frame_split_around_a_heartbeat_ping_arrives_whole() {
    let addr = harness(Upgrades::Direct).await;
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let head = upgrade_head("/engine.io/?EIO=4&transport=websocket");
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    assert!(read_until(&mut stream, &mut got, b"\"maxPayload\"").await);
    // A 200-byte message: 16-bit extended length, zero mask key.
    let message = format!("4{}", "x".repeat(199));
    let mut frame = vec![0x81, 0x80 | 126, 0, 200, 0, 0, 0, 0];
    frame.extend_from_slice(message.as_bytes());
    // The first two bytes, then a pause past the first ping (300 ms after the open
    // packet), then the rest and the pong.
    stream.write_all(&frame[..2]).await.expect("write");
    let mut ping = Vec::new();
    assert!(
        read_until(&mut stream, &mut ping, &[0x81, 0x01, b'2']).await,
        "the ping: {ping:?}"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(&frame[2..5]).await.expect("write");
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.write_all(&frame[5..]).await.expect("write");
    stream.write_all(&client_text("3")).await.expect("pong");
    let mut echo = Vec::new();
    assert!(
        read_until(&mut stream, &mut echo, message.as_bytes()).await,
        "the echo: {:?}",
        String::from_utf8_lossy(&echo)
    );
}
