//! A client's request head, parsed once and strictly (RFC 9112).
//!
//! [`head_end`] finds where a head ends by looking at the bytes that just arrived (so a
//! head trickled byte by byte costs one pass, not one parse per read), then [`parse`]
//! reads it whole and decides its framing. Anything a second parser could frame
//! differently is refused with 400: a bare CR or LF, obs-fold, a NUL, a Content-Length
//! that is signed, spaced, listed or repeated, Transfer-Encoding with Content-Length,
//! any Transfer-Encoding but a lone `chunked`, Transfer-Encoding in HTTP/1.0, a missing
//! or repeated `Host` in HTTP/1.1. A head over the size limit, or with too many fields,
//! is 431; an `Expect` other than `100-continue` is 417.

use crate::has_token;
use crate::limits::MAX_REQUEST_HEADERS;

/// The protocol version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body (neither header).
    None,
    Length(u64),
    Chunked,
}

/// Why a request is answered with an error (and its connection closed): the status, a
/// stable code for the JSON error shape, and a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

impl Refusal {
    const fn bad(message: &'static str) -> Refusal {
        Refusal {
            status: 400,
            code: "bad_request",
            message,
        }
    }

    const fn too_large(message: &'static str) -> Refusal {
        Refusal {
            status: 431,
            code: "header_too_large",
            message,
        }
    }
}

pub const MALFORMED: Refusal = Refusal::bad("malformed request");
pub const BARE_LINE_END: Refusal = Refusal::bad("a bare CR or LF in the request head");
pub const HEAD_TOO_LARGE: Refusal = Refusal::too_large("request head too large");
pub const TOO_MANY_HEADERS: Refusal = Refusal::too_large("too many header fields");
pub const BAD_LENGTH: Refusal = Refusal::bad("invalid Content-Length");
pub const TWO_LENGTHS: Refusal = Refusal::bad("more than one Content-Length");
pub const LENGTH_AND_CODING: Refusal =
    Refusal::bad("Content-Length and Transfer-Encoding together");
pub const BAD_CODING: Refusal = Refusal::bad("Transfer-Encoding other than chunked");
pub const CODING_IN_HTTP10: Refusal = Refusal::bad("Transfer-Encoding in an HTTP/1.0 request");
pub const BAD_HOST: Refusal = Refusal::bad("missing or repeated Host");
pub const EXPECTATION: Refusal = Refusal {
    status: 417,
    code: "expectation_failed",
    message: "only Expect: 100-continue is supported",
};

/// A whole request head.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    pub method: &'b str,
    /// The request target as sent (origin-, absolute-, authority- or asterisk-form).
    pub target: &'b str,
    pub version: Version,
    pub headers: &'h [httparse::Header<'b>],
    /// Length of the head in the bytes given; what follows is the body or the next
    /// request.
    pub len: usize,
    pub body: BodyLength,
    pub host: Option<&'b [u8]>,
    /// The client keeps its connection open after this request (HTTP/1.1 without
    /// `Connection: close`, HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Upgrade`'s value, when `Connection` asks for an upgrade.
    pub upgrade: Option<&'b [u8]>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl<'b> RequestHead<'_, 'b> {
    /// The first value of a header, by name in any case.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Whether a header belongs to the client's connection rather than the message, and
    /// so is never forwarded: a [`is_connection_field`], or one `Connection` names.
    pub fn is_connection_header(&self, name: &str) -> bool {
        is_connection_field(name)
            || self
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| has_token(h.value, name))
    }
}

/// The fields that are about a connection or a message's framing, whatever the protocol:
/// the hop-by-hop fields, and the framing (a gateway frames what it forwards itself).
/// Any case.
pub fn is_connection_field(name: &str) -> bool {
    const HOP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "expect",
        "proxy-authorization",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// What the bytes read so far are.
#[derive(Debug)]
pub enum Parsed<'h, 'b> {
    /// Not a whole head yet.
    Partial,
    Head(RequestHead<'h, 'b>),
    Refused(Refusal),
}

/// Storage for a head's header fields, borrowed by [`parse`].
pub type Fields<'b> = [httparse::Header<'b>; MAX_REQUEST_HEADERS];

/// Empty header storage for [`parse`].
pub fn fields<'b>() -> Fields<'b> {
    [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS]
}

/// Where the head that starts `buf` ends (the index just past its empty line), looking
/// only from `from - 3` on: the caller passes the length it had already looked at, so
/// that each byte is looked at once however the head arrives. A bare-LF line end counts
/// as an end, so that such a head is refused at once rather than waited on.
pub fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(offset) = buf.get(i..)?.iter().position(|&b| b == b'\n') {
        let lf = i + offset;
        let ends = match lf {
            0 => false,
            _ if buf[lf - 1] == b'\n' => true,
            _ => lf >= 2 && buf[lf - 1] == b'\r' && buf[lf - 2] == b'\n',
        };
        if ends {
            return Some(lf + 1);
        }
        i = lf + 1;
    }
    None
}

/// Parse the request head at the start of `buf`, if it is whole, with at most
/// `max_head` bytes.
pub fn parse<'h, 'b>(buf: &'b [u8], fields: &'h mut Fields<'b>, max_head: usize) -> Parsed<'h, 'b> {
    let Some(end) = head_end(buf, 0) else {
        return if buf.len() >= max_head {
            Parsed::Refused(HEAD_TOO_LARGE)
        } else {
            Parsed::Partial
        };
    };
    if end > max_head {
        return Parsed::Refused(HEAD_TOO_LARGE);
    }
    let head = &buf[..end];
    if !line_ends_are_crlf(head) {
        return Parsed::Refused(BARE_LINE_END);
    }
    let mut req = httparse::Request::new(fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == end => {}
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(TOO_MANY_HEADERS),
        _ => return Parsed::Refused(MALFORMED),
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Refused(MALFORMED);
    };
    let version = match version {
        0 => Version::Http10,
        _ => Version::Http11,
    };
    match framing(req.headers, version) {
        Ok(facts) => Parsed::Head(RequestHead {
            method,
            target,
            version,
            headers: req.headers,
            len: end,
            body: facts.body,
            host: facts.host,
            keep_alive: facts.keep_alive,
            upgrade: facts.upgrade,
            expect_continue: facts.expect_continue,
        }),
        Err(refusal) => Parsed::Refused(refusal),
    }
}

/// Every LF preceded by a CR and every CR followed by an LF.
fn line_ends_are_crlf(head: &[u8]) -> bool {
    head.iter().enumerate().all(|(i, &b)| match b {
        b'\n' => i > 0 && head[i - 1] == b'\r',
        b'\r' => head.get(i + 1) == Some(&b'\n'),
        _ => true,
    })
}

/// What the header fields decide about a request.
struct Facts<'b> {
    body: BodyLength,
    host: Option<&'b [u8]>,
    keep_alive: bool,
    upgrade: Option<&'b [u8]>,
    expect_continue: bool,
}

fn framing<'b>(headers: &[httparse::Header<'b>], version: Version) -> Result<Facts<'b>, Refusal> {
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let mut chunked_last = false;
    let mut host: Option<&'b [u8]> = None;
    let mut hosts = 0usize;
    let (mut close, mut keep_alive_token, mut upgrade_token) = (false, false, false);
    let mut upgrade = None;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(value).ok_or(BAD_LENGTH)?;
            if length.replace(n).is_some() {
                return Err(TWO_LENGTHS);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(|&b| b == b',') {
                codings += 1;
                chunked_last = coding.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = Some(value);
        } else if name.eq_ignore_ascii_case("connection") {
            close |= has_token(value, "close");
            keep_alive_token |= has_token(value, "keep-alive");
            upgrade_token |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(value);
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.eq_ignore_ascii_case(b"100-continue") || expect_continue {
                return Err(EXPECTATION);
            }
            expect_continue = true;
        }
    }
    let body = match (length, codings) {
        (Some(_), 1..) => return Err(LENGTH_AND_CODING),
        (_, 1..) if version == Version::Http10 => return Err(CODING_IN_HTTP10),
        // One coding, `chunked`, and nothing else: a list, a repeat or a parameter is
        // where parsers part ways.
        (None, 1) if chunked_last => BodyLength::Chunked,
        (None, 1..) => return Err(BAD_CODING),
        (Some(n), _) => BodyLength::Length(n),
        (None, _) => BodyLength::None,
    };
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(BAD_HOST);
    }
    let keep_alive = match version {
        Version::Http11 => !close,
        Version::Http10 => keep_alive_token && !close,
    };
    Ok(Facts {
        body,
        host,
        keep_alive,
        upgrade: upgrade.filter(|_| upgrade_token),
        expect_continue,
    })
}

/// `1*DIGIT` and nothing else (no sign, no space, no list), within `u64`.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Result<(BodyLength, bool, usize), Refusal> {
        let mut f = fields();
        match parse(head.as_bytes(), &mut f, 16 * 1024) {
            Parsed::Head(h) => Ok((h.body, h.keep_alive, h.len)),
            Parsed::Refused(r) => Err(r),
            Parsed::Partial => panic!("partial: {head:?}"),
        }
    }

    #[test]
    fn the_end_of_a_head_is_found_once_however_it_arrives() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest";
        assert_eq!(head_end(head, 0), Some(27));
        for split in 0..head.len() {
            let found = head_end(&head[..split], 0);
            let then = head_end(head, split);
            assert_eq!(found.or(then), Some(27), "split at {split}");
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
    }

    #[test]
    fn framing_follows_rfc_9112_and_keep_alive_the_version() {
        let get = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(parsed(get), Ok((BodyLength::None, true, get.len())));
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n").map(|p| p.0),
            Ok(BodyLength::Length(12))
        );
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").map(|p| p.0),
            Ok(BodyLength::Chunked)
        );
        assert_eq!(
            parsed("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").map(|p| p.1),
            Ok(false)
        );
        assert_eq!(parsed("GET / HTTP/1.0\r\n\r\n").map(|p| p.1), Ok(false));
        assert_eq!(
            parsed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").map(|p| p.1),
            Ok(true)
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for (head, refusal) in [
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", LENGTH_AND_CODING),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", TWO_LENGTHS),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n", BAD_LENGTH),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", BAD_LENGTH),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n", BAD_LENGTH),
            ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", BAD_LENGTH),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", BAD_CODING),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n", BAD_CODING),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BAD_CODING),
            ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", BAD_CODING),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", CODING_IN_HTTP10),
            ("GET / HTTP/1.1\r\n\r\n", BAD_HOST),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BAD_HOST),
            ("GET / HTTP/1.1\nHost: a\n\n", BARE_LINE_END),
            ("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", BARE_LINE_END),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", MALFORMED),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", MALFORMED),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n", EXPECTATION),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", MALFORMED),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", MALFORMED),
        ] {
            assert_eq!(parsed(head), Err(refusal), "{head:?}");
        }
    }

    #[test]
    fn a_head_over_the_limit_or_with_too_many_fields_is_431() {
        let mut f = fields();
        let long = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(200)
        );
        assert!(matches!(
            parse(long.as_bytes(), &mut f, 100),
            Parsed::Refused(HEAD_TOO_LARGE)
        ));
        let mut f = fields();
        let unfinished = "GET / HTTP/1.1\r\nHost: h\r\nX: aaaaaaaa";
        assert!(matches!(
            parse(unfinished.as_bytes(), &mut f, 20),
            Parsed::Refused(HEAD_TOO_LARGE)
        ));
        let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..MAX_REQUEST_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        let mut f = fields();
        assert!(matches!(
            parse(many.as_bytes(), &mut f, 64 * 1024),
            Parsed::Refused(TOO_MANY_HEADERS)
        ));
    }

    #[test]
    fn connection_headers_and_upgrade_are_told_apart_from_the_message() {
        let head = "GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade, X-Private\r\n\
                    Upgrade: websocket\r\nX-Private: 1\r\nX-Public: 2\r\nExpect: 100-continue\r\n\r\n";
        let mut f = fields();
        let Parsed::Head(h) = parse(head.as_bytes(), &mut f, 4096) else {
            panic!("not parsed");
        };
        assert_eq!(h.upgrade, Some(&b"websocket"[..]));
        assert!(h.expect_continue);
        assert_eq!(h.host, Some(&b"h"[..]));
        for name in ["Connection", "x-private", "Upgrade", "Expect", "Keep-Alive"] {
            assert!(h.is_connection_header(name), "{name}");
        }
        for name in ["X-Public", "Host", "Authorization"] {
            assert!(!h.is_connection_header(name), "{name}");
        }
        let mut f = fields();
        let plain = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
        let Parsed::Head(h) = parse(plain.as_bytes(), &mut f, 4096) else {
            panic!("not parsed");
        };
        assert_eq!(h.upgrade, None, "Upgrade without Connection: upgrade");
    }
}
