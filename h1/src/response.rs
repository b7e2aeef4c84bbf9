//! A worker's response head: its status, how its body is framed (RFC 9112 §6.3), whether
//! the connection may carry another request, and the head rewritten for the client.

use crate::body::Framing;
use crate::has_token;
use crate::limits::MAX_RESPONSE_HEADERS;

/// A response head that cannot be relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed response head")
    }
}

impl std::error::Error for Malformed {}

/// Storage for a response head's header fields.
pub type Fields<'b> = [httparse::Header<'b>; MAX_RESPONSE_HEADERS];

pub fn fields<'b>() -> Fields<'b> {
    [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS]
}

#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the head in the bytes given.
    pub len: usize,
    pub framing: Framing,
    /// The sender keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Parse the response head at the start of `buf` once it is whole. `head_request`: the
/// response answers a `HEAD` (it has no body, whatever its headers say).
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    fields: &'h mut Fields<'b>,
    head_request: bool,
) -> Result<Option<ResponseHead<'h, 'b>>, Malformed> {
    let mut resp = httparse::Response::new(fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Malformed),
    };
    let status = resp.code.ok_or(Malformed)?;
    let mut keep_alive = resp.version == Some(1);
    let (mut length, mut coded, mut chunked) = (None, false, false);
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(Malformed)?;
            if length.replace(n).is_some_and(|m| m != n) {
                return Err(Malformed);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            keep_alive &= !has_token(h.value, "close");
        }
    }
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else if coded {
        // Both a coding and a length: the coding wins, and the connection is not trusted
        // with another message.
        if length.is_some() {
            keep_alive = false;
        }
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else {
        match length {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    Ok(Some(ResponseHead {
        status,
        reason: resp.reason.unwrap_or_default(),
        headers: resp.headers,
        len,
        framing,
        keep_alive: keep_alive && framing != Framing::UntilClose,
    }))
}

impl ResponseHead<'_, '_> {
    /// `HTTP/1.1 <status> <reason>\r\n`, then every header `keep` passes, into `out`
    /// (the caller adds its own lines and the empty line).
    pub fn write(&self, out: &mut Vec<u8>, keep: impl Fn(&str) -> bool) {
        out.extend_from_slice(b"HTTP/1.1 ");
        // httparse reads exactly three digits.
        out.extend_from_slice(&[
            b'0' + (self.status / 100 % 10) as u8,
            b'0' + (self.status / 10 % 10) as u8,
            b'0' + (self.status % 10) as u8,
            b' ',
        ]);
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        for h in self.headers.iter().filter(|h| keep(h.name)) {
            crate::put_header(out, h.name.as_bytes(), h.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        text: &str,
        head_request: bool,
    ) -> Result<Option<(u16, Framing, bool, usize)>, Malformed> {
        let mut f = fields();
        parse(text.as_bytes(), &mut f, head_request)
            .map(|r| r.map(|h| (h.status, h.framing, h.keep_alive, h.len)))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            head(ok, false),
            Ok(Some((200, Framing::Length(5), true, ok.len())))
        );
        assert_eq!(
            head(ok, true).map(|h| h.map(|h| h.1)),
            Ok(Some(Framing::Empty)),
            "a HEAD answer has no body"
        );
        for (text, framing, keep) in [
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Framing::UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Framing::Chunked,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::UntilClose, false),
            ("HTTP/1.1 204 No Content\r\n\r\n", Framing::Empty, true),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
        ] {
            assert_eq!(
                head(text, false).map(|h| h.map(|h| (h.1, h.2))),
                Ok(Some((framing, keep))),
                "{text:?}"
            );
        }
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            Err(Malformed)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(Malformed)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n", false),
            Ok(None)
        );
        assert_eq!(head("garbage\r\n\r\n", false), Err(Malformed));
    }

    #[test]
    fn the_head_is_rewritten_with_the_headers_kept() {
        let text = "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nX-Secret: 1\r\n\r\n";
        let mut f = fields();
        let h = parse(text.as_bytes(), &mut f, false).unwrap().unwrap();
        let mut out = Vec::new();
        h.write(&mut out, |name| {
            !name.eq_ignore_ascii_case("connection") && name != "X-Secret"
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
        );
    }
}
