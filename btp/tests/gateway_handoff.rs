//! `btp up` hands a plain-HTTP WebSocket to its API worker (`gateway.websocket_handoff`,
//! on by default): the worker answers the upgrade on the client's own connection, with the
//! gateway's security headers and request id, and the gateway keeps no tunnel. A refusal
//! is the worker's JSON error with the same headers. With the key off, the same upgrade
//! is relayed as before.

mod ops;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use ops::{metric, serial, Stack};
use support::ws::{header, read_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDED: &str = "btp_gateway_websocket_handoffs_total{result=\"ok\"}";
const TUNNELS: &str = "btp_gateway_tunnels_open";

/// Send a WebSocket upgrade for `target`; the connection and the response head.
async fn upgrade(addr: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let response = read_head(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("response head: {e}"));
    (stream, response)
}

/// The next text frame within 10 s.
async fn next_text(ws: &mut WebSocket<TcpStream>) -> String {
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.read_frame())
        .await
        .unwrap_or_else(|_| panic!("no frame within 10 s"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(frame.opcode, OpCode::Text);
    String::from_utf8_lossy(&frame.payload).into_owned()
}

/// Open a Socket.IO session on the raw connection: the Engine.IO open packet arrives, and
/// a namespace CONNECT without a token is refused by the API's auth. Both come from the
/// API worker's Socket.IO server, over the client's connection.
async fn talk(stream: TcpStream) -> WebSocket<TcpStream> {
    let mut ws = WebSocket::after_handshake(stream, Role::Client);
    let open = next_text(&mut ws).await;
    assert!(open.starts_with("0{") && open.contains("\"sid\""), "{open}");
    ws.write_frame(Frame::text(Payload::Borrowed(b"40")))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let refused = next_text(&mut ws).await;
    assert_eq!(refused, r#"44{"message":"unauthorized"}"#);
    ws
}

fn assert_gateway_headers(head: &str) {
    assert_eq!(
        header(head, "x-content-type-options"),
        Some("nosniff"),
        "{head}"
    );
    assert!(header(head, "referrer-policy").is_some(), "{head}");
    assert!(header(head, "content-security-policy").is_some(), "{head}");
    let id = header(head, "x-request-id").unwrap_or_default();
    assert!(!id.is_empty(), "no request id in {head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_handed_to_its_worker_which_answers_with_the_gateways_headers() {
    let _serial = serial().await;
    let mut stack = Stack::start("").await;

    let (stream, head) = upgrade(stack.http, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // RFC 6455's example key and its accept value.
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_gateway_headers(&head);
    let mut ws = talk(stream).await;
    stack.wait_metric(HANDED, 1.0, Duration::from_secs(5)).await;
    let text = stack.metrics().await;
    assert_eq!(
        metric(&text, TUNNELS),
        Some(0.0),
        "handed over, not relayed"
    );

    // The session is the worker's alone now, and still serves: a second CONNECT is
    // refused the same way.
    ws.write_frame(Frame::text(Payload::Borrowed(b"40")))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    assert_eq!(next_text(&mut ws).await, r#"44{"message":"unauthorized"}"#);

    // A refusal is the worker's JSON error, with the gateway's headers, and the end of
    // the connection.
    let (mut stream, head) = upgrade(
        stack.http,
        "/socket.io/?EIO=4&transport=websocket&sid=00doesnotexist",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 400 "), "{head}");
    assert_gateway_headers(&head);
    assert_eq!(header(&head, "connection"), Some("close"));
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut body))
        .await
        .unwrap_or_else(|_| panic!("the refused connection stayed open"))
        .unwrap_or_else(|e| panic!("read: {e}"));
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!(body["code"], 1, "{body}");
    stack.wait_metric(HANDED, 2.0, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_handoff_off_the_same_websocket_is_relayed_through_a_tunnel() {
    let _serial = serial().await;
    let mut stack = Stack::start("websocket_handoff = false").await;

    let (stream, head) = upgrade(stack.http, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_gateway_headers(&head);
    let _ws = talk(stream).await;
    stack
        .wait_metric(TUNNELS, 1.0, Duration::from_secs(5))
        .await;
    let text = stack.metrics().await;
    assert_eq!(metric(&text, HANDED), Some(0.0), "relayed, not handed over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_with_any_number_of_headers_the_gateway_takes_get_a_status_line() {
    let _serial = serial().await;
    let stack = Stack::start("").await;
    // 0 to 95 extra headers (with the five an upgrade needs, up to the 100 the gateway
    // reads): handed over, and answered by the worker.
    for extra in 0..=95 {
        let mut stream = TcpStream::connect(stack.http)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let lines: String = (0..extra)
            .map(|i| format!("X-Extra-{i}: value-{i}\r\n"))
            .collect();
        let head = format!(
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{lines}\r\n",
            stack.http
        );
        stream
            .write_all(head.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        let answer = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("{extra} extra headers: no status line within 10 s"))
            .unwrap_or_else(|e| panic!("{extra} extra headers: {e}"));
        assert!(
            answer.starts_with("HTTP/1.1 101 "),
            "{extra} extra headers: {answer}"
        );
    }
    // More than the gateway reads: its own 431, a status line too.
    let mut stream = TcpStream::connect(stack.http)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let lines: String = (0..120).map(|i| format!("X-Extra-{i}: v\r\n")).collect();
    let head = format!(
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\n{lines}\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let answer = read_head(&mut stream)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}
