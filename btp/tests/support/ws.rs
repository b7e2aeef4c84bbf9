//! A raw WebSocket client for the tests: one upgrade request over a fresh loopback TCP
//! connection, fastwebsockets on the upgraded stream. No Engine.IO knowledge here.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;

pub type Ws = WebSocket<TokioIo<Upgraded>>;

struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

/// Open a WebSocket to `path` (with its query) on `addr`.
pub async fn connect(addr: SocketAddr, path: &str) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    handshake(stream, &addr.to_string(), path).await
}

/// Open a WebSocket over TLS (`wss://localhost…`) to `path` on `addr`, trusting only the
/// PEM certificate `ca_pem`, offering only HTTP/1.1 in ALPN as browsers do for WebSockets.
pub async fn connect_tls(addr: SocketAddr, path: &str, ca_pem: &[u8]) -> Result<Ws, String> {
    connect_tls_to(addr, "localhost", path, ca_pem).await
}

/// [`connect_tls`] for the server name `name`.
pub async fn connect_tls_to(
    addr: SocketAddr,
    name: &str,
    path: &str,
    ca_pem: &[u8],
) -> Result<Ws, String> {
    let connector = super::tls_connector(ca_pem, b"http/1.1")?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let server = rustls::pki_types::ServerName::try_from(name.to_string())
        .map_err(|e| format!("server name: {e}"))?;
    let tls = connector
        .connect(server, tcp)
        .await
        .map_err(|e| format!("tls handshake: {e}"))?;
    handshake(tls, &format!("{name}:{}", addr.port()), path).await
}

async fn handshake<S>(stream: S, host: &str, path: &str) -> Result<Ws, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let req = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", host)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let (ws, _) = fastwebsockets::handshake::client(&SpawnExecutor, req, stream)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(ws)
}

/// Send `text` and wait for its echo.
pub async fn echo(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
        .await
        .map_err(|e| format!("write: {e}"))?;
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.read_frame())
        .await
        .map_err(|_| "no echo within 10 s".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    match frame.opcode {
        OpCode::Text if frame.payload[..] == *text.as_bytes() => Ok(()),
        OpCode::Close => Err("closed instead of echoing".into()),
        other => Err(format!("unexpected {other:?} frame")),
    }
}

/// Read one response or request head, byte by byte so nothing after it is consumed.
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<String, String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return Err("head too long".into());
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(10), r.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            Ok(Ok(_)) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&head))),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no head within 10 s".into()),
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The value of header `name` in a raw head (lower-case names compared).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
