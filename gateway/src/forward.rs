//! What a request forwarded to an API worker says about its client: the forwarding
//! headers and the request id. Forwarded requests over HTTP/1 and HTTP/2
//! ([`crate::serve::api`]), upgrades handed over and tunnels ([`crate::serve::upgrade`])
//! all decide them here, so a worker sees the same headers whichever path a request took.

use std::net::IpAddr;

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
        _ => {
            let n = rand::random::<u128>();
            (0..32)
                .rev()
                .map(|i| char::from(b"0123456789abcdef"[(n >> (i * 4)) as usize & 0xf]))
                .collect()
        }
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

/// The forwarding headers one request gets, decided from what its client sent.
pub struct Forwarding<'a> {
    /// `x-forwarded-for`: a trusted proxy's chain extended with the peer, or the peer.
    pub for_chain: String,
    /// `x-forwarded-proto`: a trusted proxy's, or the listener's scheme.
    pub proto: &'a [u8],
    /// `x-forwarded-host`: a trusted proxy's, else the `Host` header, else the request
    /// target's authority.
    pub host: Option<&'a [u8]>,
}

impl<'a> Forwarding<'a> {
    /// `incoming` looks a request header up by its lowercase name.
    pub fn decide(
        client: Client,
        incoming: impl Fn(&str) -> Option<&'a [u8]>,
        authority: Option<&'a [u8]>,
    ) -> Forwarding<'a> {
        let claimed = |name: &str| if client.trusted { incoming(name) } else { None };
        let peer = client
            .peer
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "unknown".into());
        // A chain that is not plain visible ASCII is not one a proxy wrote; start over.
        let chain = claimed("x-forwarded-for")
            .filter(|v| v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)))
            .and_then(|v| std::str::from_utf8(v).ok());
        Forwarding {
            for_chain: match chain {
                Some(chain) => format!("{chain}, {peer}"),
                None => peer,
            },
            proto: claimed("x-forwarded-proto").unwrap_or(if client.tls {
                b"https"
            } else {
                b"http"
            }),
            host: claimed("x-forwarded-host")
                .or_else(|| incoming("host"))
                .or(authority),
        }
    }

    /// These headers as HTTP/1 lines, appended to `out`.
    pub fn put(&self, out: &mut Vec<u8>) {
        btp_h1::put_header(out, b"x-forwarded-for", self.for_chain.as_bytes());
        btp_h1::put_header(out, b"x-forwarded-proto", self.proto);
        if let Some(host) = self.host {
            btp_h1::put_header(out, b"x-forwarded-host", host);
        }
    }
}

/// Whether a request header is the client's to send on: hop-by-hop headers belong to the
/// client's connection, and forwarding headers (and the request id) are the gateway's
/// to set. Any case.
pub fn passes(name: &str) -> bool {
    !(is_forwarding(name) || is_hop_by_hop(name) || name.eq_ignore_ascii_case("x-request-id"))
}

/// Headers about one connection, not the message: never passed on, either way. Any case.
pub fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection"]
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop))
}

/// Whether a comma-separated header value (`Connection`, `Upgrade`, ...) lists `token`.
pub fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Any case.
fn is_forwarding(name: &str) -> bool {
    name.get(..12)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("x-forwarded-"))
        || name.eq_ignore_ascii_case("forwarded")
        || name.eq_ignore_ascii_case("x-real-ip")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forwarding a request with `headers` gets: (for, proto, host).
    fn decided(headers: &[(&str, &str)], client: Client) -> (String, String, Option<String>) {
        let incoming = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
        };
        let authority = incoming("host");
        let d = Forwarding::decide(client, incoming, authority);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (d.for_chain, text(d.proto), d.host.map(text))
    }

    #[test]
    fn an_untrusted_client_cannot_claim_to_be_a_proxy() {
        let headers = [
            ("host", "btp.example.ma"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-proto", "http"),
        ];
        let client = Client {
            peer: Some(IpAddr::from([10, 0, 0, 7])),
            trusted: false,
            tls: true,
        };
        assert_eq!(
            decided(&headers, client),
            (
                "10.0.0.7".into(),
                "https".into(),
                Some("btp.example.ma".into())
            )
        );
        // Whatever else says where the request came from is dropped.
        for claim in ["x-real-ip", "Forwarded", "X-Forwarded-Port"] {
            assert!(!passes(claim), "{claim} passes");
        }
    }

    #[test]
    fn a_trusted_proxy_extends_the_chain() {
        let headers = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ];
        let client = Client {
            peer: Some(IpAddr::from([127, 0, 0, 1])),
            trusted: true,
            tls: false,
        };
        let (chain, proto, _) = decided(&headers, client);
        assert_eq!(
            (chain.as_str(), proto.as_str()),
            ("1.2.3.4, 127.0.0.1", "https")
        );
    }

    #[test]
    fn forwarding_and_hop_by_hop_headers_are_recognised_in_any_case() {
        for name in [
            "X-Forwarded-For",
            "x-forwarded-host",
            "Forwarded",
            "X-REAL-IP",
            "X-Request-Id",
            "Connection",
            "keep-alive",
            "Proxy-Connection",
        ] {
            assert!(!passes(name), "{name} passes");
        }
        for name in ["Host", "Accept", "X-Forwarded", "Authorization", "é"] {
            assert!(passes(name), "{name} is dropped");
        }
    }

    #[test]
    fn request_ids_are_kept_only_from_trusted_peers_and_only_if_clean() {
        assert_eq!(request_id(Some("req-1"), true), "req-1");
        assert_ne!(request_id(Some("req-1"), false), "req-1");
        assert_ne!(request_id(Some("bad id\r\n"), true), "bad id\r\n");
        assert_eq!(request_id(None, true).len(), 32);
    }
}
