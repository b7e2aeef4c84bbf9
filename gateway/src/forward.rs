//! What a request forwarded to an API worker says about its client: the forwarding
//! headers and the request id. Both the Pingora path ([`crate::proxy`]) and the WebSocket
//! tunnel path ([`crate::tunnel`]) forward through here, so a worker sees the same headers
//! whichever path a request took.

use std::net::IpAddr;

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

/// The client side of a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub peer: Option<IpAddr>,
    /// The peer is one of `trusted_proxies`: its forwarding headers are believed.
    pub trusted: bool,
    pub tls: bool,
}

/// A request id for a new request: the incoming one if a trusted proxy sent an
/// acceptable one, else a fresh one.
pub fn request_id(incoming: Option<&str>, trusted: bool) -> String {
    match incoming {
        Some(id) if trusted && acceptable_request_id(id) => id.to_string(),
        _ => format!("{:032x}", rand::random::<u128>()),
    }
}

/// An incoming request id is only kept if it is a short token that cannot smuggle
/// anything into logs or headers.
fn acceptable_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Rewrite `upstream` (a copy of the incoming request header) for the worker: the
/// forwarding headers the gateway vouches for, and `x-request-id`.
pub fn apply(
    upstream: &mut RequestHeader,
    client: Client,
    request_id: &str,
) -> pingora::Result<()> {
    let incoming = |name: &str| {
        client
            .trusted
            .then(|| upstream.headers.get(name).cloned())
            .flatten()
    };
    let xff = incoming("x-forwarded-for").and_then(|v| v.to_str().ok().map(str::to_string));
    let xfp = incoming("x-forwarded-proto");
    let host = incoming("x-forwarded-host")
        .or_else(|| upstream.headers.get(http::header::HOST).cloned())
        .or_else(|| {
            let authority = upstream.uri.authority()?;
            HeaderValue::from_str(authority.as_str()).ok()
        });

    // Anything forwarding-related from an untrusted peer is a client claiming to be
    // a proxy; drop it all, not only the three headers set below.
    let forwarded: Vec<HeaderName> = upstream
        .headers
        .keys()
        .filter(|k| is_forwarding(k.as_str()))
        .cloned()
        .collect();
    for name in forwarded {
        upstream.remove_header(&name);
    }

    let peer_text = client
        .peer
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".into());
    let xff = match xff {
        Some(chain) => format!("{chain}, {peer_text}"),
        None => peer_text,
    };
    let proto =
        xfp.unwrap_or_else(|| HeaderValue::from_static(if client.tls { "https" } else { "http" }));
    upstream.insert_header("x-forwarded-for", xff)?;
    upstream.insert_header("x-forwarded-proto", proto)?;
    if let Some(host) = host {
        upstream.insert_header("x-forwarded-host", host)?;
    }
    upstream.insert_header("x-request-id", request_id)?;
    Ok(())
}

fn is_forwarding(name: &str) -> bool {
    name.starts_with("x-forwarded-") || name == "forwarded" || name == "x-real-ip"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut req =
            RequestHeader::build("GET", b"/socket.io/", None).unwrap_or_else(|e| panic!("{e}"));
        for (name, value) in headers {
            req.append_header(*name, *value)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        req
    }

    fn get<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
        req.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn an_untrusted_client_cannot_claim_to_be_a_proxy() {
        let mut req = request(&[
            ("host", "btp.example.ma"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let client = Client {
            peer: Some(IpAddr::from([10, 0, 0, 7])),
            trusted: false,
            tls: true,
        };
        apply(&mut req, client, "abc").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get(&req, "x-forwarded-for"), Some("10.0.0.7"));
        assert_eq!(get(&req, "x-forwarded-proto"), Some("https"));
        assert_eq!(get(&req, "x-forwarded-host"), Some("btp.example.ma"));
        assert_eq!(get(&req, "x-request-id"), Some("abc"));
        assert_eq!(get(&req, "x-real-ip"), None);
        assert_eq!(get(&req, "forwarded"), None);
    }

    #[test]
    fn a_trusted_proxy_extends_the_chain() {
        let mut req = request(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = Client {
            peer: Some(IpAddr::from([127, 0, 0, 1])),
            trusted: true,
            tls: false,
        };
        apply(&mut req, client, "id").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get(&req, "x-forwarded-for"), Some("1.2.3.4, 127.0.0.1"));
        assert_eq!(get(&req, "x-forwarded-proto"), Some("https"));
    }

    #[test]
    fn request_ids_are_kept_only_from_trusted_peers_and_only_if_clean() {
        assert_eq!(request_id(Some("req-1"), true), "req-1");
        assert_ne!(request_id(Some("req-1"), false), "req-1");
        assert_ne!(request_id(Some("bad id\r\n"), true), "bad id\r\n");
        assert_eq!(request_id(None, true).len(), 32);
    }
}
