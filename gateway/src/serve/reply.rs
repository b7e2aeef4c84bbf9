//! Responses the gateway makes itself (static files, `/config.json`, redirects, its JSON
//! errors): [`made`] makes those that are not files; on an HTTP/1 connection each goes
//! out as its head in HTTP/1.1 wire form with the request id, `Connection: close` when
//! the connection ends after it, and the body unless the request was a `HEAD` — in one
//! write.

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pingora::http::ResponseHeader;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::decide::Action;
use crate::respond::{self, Reply};

/// How a reply goes out.
#[derive(Debug, Clone, Copy)]
pub struct Out<'a> {
    pub request_id: &'a str,
    /// The connection closes after this reply.
    pub close: bool,
    /// The request was a `HEAD`: the head only.
    pub head_only: bool,
    /// The client must take each write within this.
    pub send_timeout: Duration,
}

/// A reply the gateway makes without the static store: `/config.json`, a redirect, a
/// refusal. (Static files come from the store; forwarding and upgrades make none.)
pub fn made(action: &Action, client_config: &Bytes, tls: bool) -> pingora::Result<Reply> {
    match action {
        Action::ClientConfig => {
            let mut header = respond::header(200, tls)?;
            header.insert_header("content-type", "application/json")?;
            header.insert_header("cache-control", "no-cache")?;
            header.insert_header("content-length", client_config.len().to_string())?;
            Ok(Reply {
                header,
                body: client_config.clone(),
            })
        }
        Action::Redirect(location) => {
            let mut header = respond::header(308, tls)?;
            header.insert_header("location", location.as_str())?;
            header.insert_header("content-length", "0")?;
            Ok(Reply {
                header,
                body: Bytes::new(),
            })
        }
        Action::Refuse {
            status,
            code,
            message,
            ..
        } => respond::error(*status, code, message, tls),
        Action::Static(_) | Action::Forward { .. } | Action::Upgrade { .. } => {
            respond::error(500, "internal", "internal error", tls)
        }
    }
}

/// The head of `header` in HTTP/1.1 wire form, with the request id and, when `close`,
/// `Connection: close`, then `body`.
pub fn wire(header: &ResponseHeader, body: &[u8], request_id: &str, close: bool) -> BytesMut {
    let mut buf = BytesMut::with_capacity(512 + body.len());
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(header.status.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(header.get_reason_phrase().unwrap_or_default().as_bytes());
    buf.put_slice(b"\r\n");
    header.header_to_h1_wire(&mut buf);
    buf.put_slice(b"x-request-id: ");
    buf.put_slice(request_id.as_bytes());
    buf.put_slice(b"\r\n");
    if close {
        buf.put_slice(b"connection: close\r\n");
    }
    buf.put_slice(b"\r\n");
    buf.put_slice(body);
    buf
}

/// Write `reply`; the body bytes sent.
pub async fn write<C>(client: &mut C, reply: &Reply, out: Out<'_>) -> io::Result<usize>
where
    C: AsyncWrite + Unpin + ?Sized,
{
    let body: &[u8] = if out.head_only { &[] } else { &reply.body };
    let bytes = wire(&reply.header, body, out.request_id, out.close);
    send(client, &bytes, out.send_timeout).await?;
    Ok(body.len())
}

/// The gateway's JSON error with `status`, `code` and `message`; the body bytes sent.
pub async fn error<C>(
    client: &mut C,
    status: u16,
    code: &str,
    message: &str,
    tls: bool,
    out: Out<'_>,
) -> io::Result<usize>
where
    C: AsyncWrite + Unpin + ?Sized,
{
    let reply = respond::error(status, code, message, tls)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "error reply"))?;
    write(client, &reply, out).await
}

/// Write and flush `bytes` within `limit`.
pub async fn send<C>(client: &mut C, bytes: &[u8], limit: Duration) -> io::Result<()>
where
    C: AsyncWrite + Unpin + ?Sized,
{
    let sent = async {
        client.write_all(bytes).await?;
        client.flush().await
    };
    match tokio::time::timeout(limit, sent).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take the response in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_carries_the_request_id_and_the_close() {
        let reply =
            respond::error(404, "not_found", "nothing", false).unwrap_or_else(|e| panic!("{e}"));
        let bytes = wire(&reply.header, &reply.body, "r-1", true);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("\r\nx-request-id: r-1\r\n"));
        assert!(text.contains("\r\nconnection: close\r\n\r\n{\"error\""));
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(&bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!("{other:?}"),
        };
        assert_eq!(bytes.len() - len, reply.body.len());
    }
}
