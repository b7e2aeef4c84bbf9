//! Responses the gateway writes itself: the security headers every response carries, the
//! one JSON error shape clients see, and the header builder both use.
//!
//! Kept apart from the proxy phases so the static store, the admin listener and the error
//! paths cannot drift apart on what "every response" means.

use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderValue;
use pingora::http::ResponseHeader;

/// The policy the shipped web app is written against (CONTRACTS.md); sent on every
/// response, not only on HTML, so no content type can slip through without it.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; font-src 'self'; connect-src 'self' ws: wss:; object-src 'none'; \
base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Two years, the value browsers' preload lists ask for.
pub const HSTS: &str = "max-age=63072000; includeSubDomains";

pub const SECURITY: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", CSP),
];

/// Set the security headers on `resp`, replacing whatever an upstream sent: the gateway
/// owns this policy. (Values from `from_static` are neither copied nor re-validated, which
/// matters on the proxied path, where this runs on every response.)
pub fn secure(resp: &mut ResponseHeader, tls: bool) -> pingora::Result<()> {
    for (name, value) in SECURITY {
        resp.insert_header(name, HeaderValue::from_static(value))?;
    }
    if tls {
        resp.insert_header("strict-transport-security", HeaderValue::from_static(HSTS))?;
    }
    Ok(())
}

/// The security headers as HTTP/1 header lines (`name: value\r\n` each), for the paths
/// that write response heads as bytes; built once.
pub fn security_lines(tls: bool) -> &'static [u8] {
    static LINES: std::sync::OnceLock<[Vec<u8>; 2]> = std::sync::OnceLock::new();
    let [plain, secure] = LINES.get_or_init(|| {
        let mut plain = Vec::new();
        for (name, value) in SECURITY {
            plain.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let mut secure = plain.clone();
        secure.extend_from_slice(format!("strict-transport-security: {HSTS}\r\n").as_bytes());
        [plain, secure]
    });
    if tls {
        secure
    } else {
        plain
    }
}

/// Whether a response header is the gateway's to set (its security policy), whatever an
/// upstream sent.
pub fn is_security_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("strict-transport-security")
        || SECURITY
            .iter()
            .any(|(ours, _)| name.eq_ignore_ascii_case(ours))
}

/// `{"error": {"code": ..., "message": ...}}`, the shape every client-visible error has.
pub fn error_body(code: &str, message: &str) -> Bytes {
    let value = serde_json::json!({ "error": { "code": code, "message": message } });
    Bytes::from(value.to_string())
}

/// A complete response: header (with security headers, length and type) and body.
pub struct Reply {
    pub header: ResponseHeader,
    pub body: Bytes,
}

/// `header` in HTTP/1.1 wire form: its status line and header lines, without the empty
/// line that ends a head (the caller adds its own lines first).
pub fn h1_lines(header: &ResponseHeader, buf: &mut BytesMut) {
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(header.status.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(header.get_reason_phrase().unwrap_or_default().as_bytes());
    buf.put_slice(b"\r\n");
    header.header_to_h1_wire(buf);
}

/// Start a response with the security headers and no body framing yet.
pub fn header(status: u16, tls: bool) -> pingora::Result<ResponseHeader> {
    let mut resp = ResponseHeader::build(status, Some(12))?;
    secure(&mut resp, tls)?;
    Ok(resp)
}

/// A JSON error reply.
pub fn error(status: u16, code: &str, message: &str, tls: bool) -> pingora::Result<Reply> {
    let body = error_body(code, message);
    let mut header = header(status, tls)?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    Ok(Reply { header, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_contract_shape() {
        let body = error_body("payload_too_large", "too big");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["error"]["code"], "payload_too_large");
        assert_eq!(v["error"]["message"], "too big");
    }

    #[test]
    fn security_lines_are_the_security_headers() {
        let plain = String::from_utf8_lossy(security_lines(false));
        let tls = String::from_utf8_lossy(security_lines(true));
        assert_eq!(plain.lines().count(), SECURITY.len());
        assert!(plain.contains("x-content-type-options: nosniff\r\n"));
        assert!(!plain.contains("strict-transport-security"));
        assert!(tls.ends_with(&format!("strict-transport-security: {HSTS}\r\n")));
        assert!(is_security_header("Content-Security-Policy"));
        assert!(!is_security_header("content-type"));
    }

    #[test]
    fn hsts_only_over_tls() {
        let plain = header(200, false).ok();
        let tls = header(200, true).ok();
        assert!(plain.is_some_and(|h| h.headers.get("strict-transport-security").is_none()));
        assert!(tls.is_some_and(|h| h.headers.get("strict-transport-security").is_some()));
    }
}
