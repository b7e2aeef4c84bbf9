//! A look at the first bytes of an accepted connection, before an HTTP server gets it.
//!
//! A realtime client holds one WebSocket open for hours, and through hyper each one keeps
//! hyper's upgraded connection (the boxed stream and its read-ahead buffer) for that whole
//! life. A server that [`sniff`]s its connections can give one whose first request is a
//! WebSocket upgrade for this crate straight to [`crate::Server::handle_websocket`] (or
//! [`crate::EngineServer::handle_websocket`]), with no HTTP server state at all.
//!
//! The look is a `peek`: nothing is consumed unless the whole head is there and is such
//! an upgrade on a path the caller accepts. Anything else — another request, a head
//! split over several segments, a silent client — is handed back untouched for the HTTP
//! server, which serves it as it always did (an upgrade included), so this path only
//! ever takes what it fully understands.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest wait for a connection's first bytes before it goes to axum anyway.
const FIRST_BYTES_LIMIT: Duration = Duration::from_secs(5);

/// The most of a head looked at; a longer upgrade head is served by hyper.
const PEEK_BYTES: usize = 4096;

/// More headers than this is not a browser's upgrade: hyper's.
const MAX_HEADERS: usize = 48;

/// What an accepted connection turned out to be.
pub enum Sniffed {
    /// Anything else: the HTTP server's, untouched.
    Http(TcpStream, SocketAddr),
    /// A WebSocket upgrade on an accepted path, its head read (and nothing after it).
    WebSocket(TcpStream, http::Request<()>),
    /// The connection failed while its head was read.
    Gone,
}

/// Look at `stream`'s first bytes for a WebSocket upgrade on a path `accept`s.
pub async fn sniff(stream: TcpStream, peer: SocketAddr, accept: impl Fn(&str) -> bool) -> Sniffed {
    let mut buf = vec![0; PEEK_BYTES];
    let upgrade = match tokio::time::timeout(FIRST_BYTES_LIMIT, stream.peek(&mut buf)).await {
        Ok(Ok(n)) => websocket_upgrade(&buf[..n], MAX_HEADERS)
            .filter(|(request, _)| accept(request.uri().path())),
        _ => None,
    };
    let Some((request, len)) = upgrade else {
        return Sniffed::Http(stream, peer);
    };
    let mut stream = stream;
    // The bytes are in the socket's queue already: this read does not wait.
    match stream.read_exact(&mut buf[..len]).await {
        Ok(_) => Sniffed::WebSocket(stream, request),
        Err(_) => Sniffed::Gone,
    }
}

/// The request, and its head's length, when `bytes` start with a whole HTTP/1.1
/// WebSocket upgrade with no body and at most `max_headers` header fields (pure).
pub fn websocket_upgrade(bytes: &[u8], max_headers: usize) -> Option<(http::Request<()>, usize)> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = parsed.parse(bytes).ok()? else {
        return None;
    };
    if parsed.method != Some("GET") || parsed.version != Some(1) {
        return None;
    }
    let target = parsed.path?;
    let mut request = http::Request::builder()
        .method(http::Method::GET)
        .uri(target);
    let (mut websocket, mut connection_upgrade) = (false, false);
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") {
            websocket |= has_token(h.value, "websocket");
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection_upgrade |= has_token(h.value, "upgrade");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
        {
            return None;
        }
        request = request.header(h.name, h.value);
    }
    if !(websocket && connection_upgrade) {
        return None;
    }
    Some((request.body(()).ok()?, len))
}

fn has_token(list: &[u8], token: &str) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &str = "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n\
        Host: 127.0.0.1\r\n\
        Upgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn a_whole_realtime_upgrade_is_taken_with_its_length_and_headers() {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(b"\x81\x01x");
        let (request, len) = websocket_upgrade(&bytes, MAX_HEADERS).expect("an upgrade");
        assert_eq!(len, UPGRADE.len());
        assert_eq!(request.uri(), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(
            request.headers()["sec-websocket-key"],
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        assert_eq!(request.headers()["connection"], "keep-alive, Upgrade");
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        let cases = [
            // A head not whole yet.
            UPGRADE[..UPGRADE.len() - 2].to_owned(),
            // Not a GET, not HTTP/1.1, not a request target.
            UPGRADE.replacen("GET", "POST", 1),
            UPGRADE.replacen("HTTP/1.1", "HTTP/1.0", 1),
            UPGRADE.replacen("/socket.io/?", "/socket io/?", 1),
            // Not an upgrade to WebSocket.
            UPGRADE.replacen("Upgrade: websocket", "Upgrade: h2c", 1),
            UPGRADE.replacen("keep-alive, Upgrade", "keep-alive", 1),
            // A body.
            UPGRADE.replacen("\r\n\r\n", "\r\nContent-Length: 3\r\n\r\nabc", 1),
            UPGRADE.replacen("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n", 1),
            // Not HTTP.
            "\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03".to_owned(),
        ];
        for case in cases {
            assert!(
                websocket_upgrade(case.as_bytes(), MAX_HEADERS).is_none(),
                "{case:?}"
            );
        }
        let many = (0..MAX_HEADERS)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>();
        let crowded = UPGRADE.replacen("\r\n\r\n", &format!("\r\n{many}\r\n"), 1);
        assert!(websocket_upgrade(crowded.as_bytes(), MAX_HEADERS).is_none());
        assert!(websocket_upgrade(crowded.as_bytes(), MAX_HEADERS * 2).is_some());
        let empty_body = UPGRADE.replacen("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n", 1);
        assert!(websocket_upgrade(empty_body.as_bytes(), MAX_HEADERS).is_some());
    }
}
