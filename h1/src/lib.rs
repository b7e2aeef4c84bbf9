//! # btp-h1 — the HTTP/1.1 codec of the BTP gateway
//!
//! Pure functions, no IO: bytes in, a decision out. The gateway's edge reads every HTTP/1
//! request head with [`request::parse`], relays a worker's answer with [`response::parse`]
//! and frames bodies with [`body`]; the API worker reads the heads the gateway hands it
//! with the same limits ([`limits`]), so the two can never disagree on what fits.
//!
//! Strict where a proxy must be: a request whose framing two parsers could read two ways
//! (Content-Length with Transfer-Encoding, two lengths, a coding other than `chunked`,
//! obs-fold, a bare CR or LF, a signed or spaced length...) is refused, not guessed at,
//! and a body the gateway forwards is re-framed canonically, so a worker always reads
//! exactly the message boundaries the gateway read. That is what closes request
//! smuggling; `tests/smuggling.rs` holds the table of framings it is checked against.
//!
//! The fuzz targets in `fuzz/` (`h1_request`, `h1_response`, `h1_chunked`) drive each
//! parser with arbitrary bytes.

pub mod body;
pub mod limits;
pub mod request;
pub mod response;

/// Whether a comma-separated header value (`Connection`, `Upgrade`, `Transfer-Encoding`)
/// lists `token`, in any case.
pub fn has_token(list: &[u8], token: &str) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Append a `name: value\r\n` header line.
pub fn put_header(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    for part in [name, b": ", value, b"\r\n"] {
        buf.extend_from_slice(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_in_any_case_and_spacing() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(has_token(b" close ", "close"));
        assert!(!has_token(b"closed", "close"));
        assert!(!has_token(b"", "close"));
    }
}
