//! Responses the gateway makes itself (static files, `/config.json`, redirects, its JSON
//! errors): [`made`] makes those that are not files; on an HTTP/1 connection each goes
//! out as its head in HTTP/1.1 wire form with the request id, `Connection: close` when
//! the connection ends after it, and the body unless the request was a `HEAD` — in one
//! write.

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::assets::Answer;
use crate::decide::Action;
use crate::live::Snapshot;
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

/// A reply the gateway makes without the static store: `/config.json`, an ACME answer, a
/// redirect, a refusal. (Static files come from the store; forwarding and upgrades make
/// none.)
pub fn made(action: &Action, snap: &Snapshot, tls: bool) -> pingora::Result<Reply> {
    match action {
        Action::ClientConfig => {
            let body = snap.client_config.clone();
            let mut header = respond::header(200, tls)?;
            header.insert_header("content-type", "application/json")?;
            header.insert_header("cache-control", "no-cache")?;
            header.insert_header("content-length", body.len().to_string())?;
            Ok(Reply { header, body })
        }
        Action::AcmeChallenge(token) => match snap.challenges.answer(token) {
            Some(key_authorization) => {
                let body = Bytes::from(key_authorization);
                let mut header = respond::header(200, tls)?;
                header.insert_header("content-type", "application/octet-stream")?;
                header.insert_header("cache-control", "no-store")?;
                header.insert_header("content-length", body.len().to_string())?;
                Ok(Reply { header, body })
            }
            None => made(&crate::decide::no_such_challenge(), snap, tls),
        },
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

/// A reply whose head is `lines` ([`respond::h1_lines`]) in HTTP/1.1 wire form: those
/// lines, the request id and, when `close`, `Connection: close`, then `body`.
pub fn wire(lines: &[u8], body: &[u8], request_id: &str, close: bool) -> BytesMut {
    let mut buf = BytesMut::with_capacity(lines.len() + request_id.len() + 40 + body.len());
    buf.put_slice(lines);
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
    let mut lines = BytesMut::with_capacity(256);
    respond::h1_lines(&reply.header, &mut lines);
    put(client, &lines, &reply.body, out).await
}

/// Write what the static store answered: a file's head was put in wire form when the
/// store loaded it, so only the request's own lines are added here.
pub async fn answer<C>(client: &mut C, answer: &Answer<'_>, out: Out<'_>) -> io::Result<usize>
where
    C: AsyncWrite + Unpin + ?Sized,
{
    match answer {
        Answer::File { head, body, .. } => put(client, &head.h1, body, out).await,
        Answer::Made(reply) => write(client, reply, out).await,
    }
}

async fn put<C>(client: &mut C, lines: &[u8], body: &[u8], out: Out<'_>) -> io::Result<usize>
where
    C: AsyncWrite + Unpin + ?Sized,
{
    let body: &[u8] = if out.head_only { &[] } else { body };
    let bytes = wire(lines, body, out.request_id, out.close);
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
        let mut lines = BytesMut::new();
        respond::h1_lines(&reply.header, &mut lines);
        let bytes = wire(&lines, &reply.body, "r-1", true);
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
