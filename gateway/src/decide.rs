//! What to do with a request, decided once, from what it is and who sent it (pure).
//!
//! Every request on the public port — an HTTP/1 head the edge read, an HTTP/2 request
//! Pingora read — is put as [`Facts`] and gets one [`Decision`]: its route and request
//! id, and one [`Action`]. The servers act on it and decide nothing more: this is the one
//! place the redirect to HTTPS, the path decoding and classification, the method rules,
//! the body limit and the worker choice (sid-sticky) are made, and the one table-driven
//! test of the front door's policy.

use std::time::Duration;

use crate::config::Settings;
use crate::forward::{self, Client};
use crate::path::{self, CleanPath};
use crate::route::{classify, Listener, Route};
use crate::upstream::sticky_worker;

/// What a request is, as much as a decision needs.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub method: &'a str,
    /// The request target as sent.
    pub target: &'a str,
    pub host: Option<&'a str>,
    pub client: Client,
    /// `x-request-id` as sent (kept only from a trusted proxy).
    pub request_id: Option<&'a str>,
    /// The declared body length, when there is one.
    pub content_length: Option<u64>,
    /// A WebSocket upgrade: `Upgrade: websocket` with `Connection: upgrade`.
    pub websocket: bool,
}

/// What the gateway does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer with the JSON error; `close`: the connection cannot carry another request
    /// (its body was not read).
    Refuse {
        status: u16,
        code: &'static str,
        message: String,
        close: bool,
    },
    /// 308 to this location.
    Redirect(String),
    /// `GET /config.json`.
    ClientConfig,
    /// `GET /.well-known/acme-challenge/<token>`: the key authorization for the token.
    AcmeChallenge(String),
    /// A file of the web app (or its 404, 405).
    Static(CleanPath),
    /// To an API worker: `sticky` names the worker that owns the Engine.IO session, if
    /// any; `read_timeout` bounds each wait for the worker's answer.
    Forward {
        sticky: Option<usize>,
        read_timeout: Duration,
    },
    /// A WebSocket upgrade to hand over or relay.
    Upgrade { sticky: Option<usize> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    pub request_id: String,
    /// The path as sent, for the access log.
    pub path: String,
    pub action: Action,
}

fn refuse(status: u16, code: &'static str, message: impl Into<String>, close: bool) -> Action {
    Action::Refuse {
        status,
        code,
        message: message.into(),
        close,
    }
}

/// The path and query of a target in origin form (`/p?q`) or absolute form
/// (`http://host/p?q`, whose authority stands in for a missing `Host`).
fn origin(target: &str) -> Option<(&str, Option<&str>)> {
    if target.starts_with('/') {
        return Some((target, None));
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    match rest.find('/') {
        Some(slash) => Some((&rest[slash..], Some(&rest[..slash]))),
        None => Some(("/", Some(rest))),
    }
}

/// The answer to an ACME challenge path with no answer (a malformed token here, an
/// unknown one in `serve/reply.rs`).
pub fn no_such_challenge() -> Action {
    refuse(404, "not_found", "no such challenge", false)
}

/// An ACME token: base64url, as the authority makes them (RFC 8555 §8.1), bounded.
fn is_token(token: &str) -> bool {
    (1..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn decide(facts: &Facts<'_>, s: &Settings, workers: usize) -> Decision {
    let request_id = forward::request_id(facts.request_id, facts.client.trusted);
    let (path_and_query, authority) = origin(facts.target).unwrap_or((facts.target, None));
    let raw_path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    let query = path_and_query.split_once('?').map(|(_, q)| q);
    let mut decision = Decision {
        route: Route::Static,
        request_id,
        path: raw_path.to_string(),
        action: refuse(400, "bad_request", "malformed request", true),
    };

    // The gateway is not a forward proxy: CONNECT gets the usual JSON shape.
    if facts.method == "CONNECT" {
        decision.action = refuse(405, "method_not_allowed", "CONNECT is not proxied", true);
        return decision;
    }
    // An ACME authority checks a name over plain HTTP, redirect or not, and before the
    // first certificate exists (RFC 8555 §8.3: it would follow a redirect, but to what?).
    if classify(Listener::Public, raw_path) == Route::AcmeChallenge {
        decision.route = Route::AcmeChallenge;
        let token = raw_path
            .strip_prefix(crate::route::ACME_CHALLENGE)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|t| is_token(t));
        decision.action = match (facts.method, token) {
            ("GET" | "HEAD", Some(token)) => Action::AcmeChallenge(token.to_string()),
            ("GET" | "HEAD", None) => no_such_challenge(),
            _ => refuse(405, "method_not_allowed", "GET only", false),
        };
        return decision;
    }
    if !facts.client.tls && s.redirect_http {
        let host = facts.host.or(authority).unwrap_or_default();
        if let Some(location) = s.https_location(host, path_and_query) {
            decision.action = Action::Redirect(location);
            return decision;
        }
    }
    let clean = match path::decode(raw_path) {
        Ok(clean) => clean,
        Err(e) => {
            decision.action = refuse(400, "bad_path", e.to_string(), false);
            return decision;
        }
    };
    decision.route = classify(Listener::Public, clean.as_str());
    decision.action = match decision.route {
        Route::ClientConfig if matches!(facts.method, "GET" | "HEAD") => Action::ClientConfig,
        Route::ClientConfig => refuse(405, "method_not_allowed", "GET only", false),
        Route::Static => Action::Static(clean),
        Route::Api | Route::Realtime => {
            if facts.content_length.is_some_and(|n| n > s.max_body_bytes) {
                refuse(
                    413,
                    "payload_too_large",
                    "request body is larger than the gateway accepts",
                    true,
                )
            } else {
                let sticky = match decision.route {
                    Route::Realtime => sticky_worker(query, workers),
                    _ => None,
                };
                if facts.websocket && decision.route == Route::Realtime && facts.method == "GET" {
                    Action::Upgrade { sticky }
                } else {
                    // A long-polling GET is answered at the latest with the next ping.
                    let read_timeout = if decision.route == Route::Realtime && facts.method == "GET"
                    {
                        s.polling_read_timeout
                    } else {
                        s.api_read_timeout
                    };
                    Action::Forward {
                        sticky,
                        read_timeout,
                    }
                }
            }
        }
        // Only the admin listener has these.
        _ => refuse(404, "not_found", "no such route", false),
    };
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(configure: impl FnOnce(&mut btp_config::Config)) -> Settings {
        let mut c = btp_config::Config::default();
        c.realtime.ping_interval_ms = 1000;
        configure(&mut c);
        Settings::from_config(&c).unwrap_or_else(|e| panic!("{e}"))
    }

    fn facts<'a>(method: &'a str, target: &'a str) -> Facts<'a> {
        Facts {
            method,
            target,
            host: Some("btp.example.ma:8080"),
            client: Client {
                peer: Some([127, 0, 0, 1].into()),
                trusted: false,
                tls: false,
            },
            request_id: None,
            content_length: None,
            websocket: false,
        }
    }

    #[test]
    fn every_request_gets_the_documented_action() {
        let s = settings(|_| {});
        let api = Action::Forward {
            sticky: None,
            read_timeout: s.api_read_timeout,
        };
        let polling = |sticky| Action::Forward {
            sticky,
            read_timeout: s.polling_read_timeout,
        };
        let table: Vec<(Facts, Route, Action)> = vec![
            (
                facts("GET", "/"),
                Route::Static,
                Action::Static(path::decode("/").unwrap()),
            ),
            (
                facts("GET", "/projects/42"),
                Route::Static,
                Action::Static(path::decode("/projects/42").unwrap()),
            ),
            (
                facts("POST", "/index.html"),
                Route::Static,
                Action::Static(path::decode("/index.html").unwrap()),
            ),
            (
                facts("GET", "/config.json"),
                Route::ClientConfig,
                Action::ClientConfig,
            ),
            (
                facts("HEAD", "/config.json"),
                Route::ClientConfig,
                Action::ClientConfig,
            ),
            (
                facts("POST", "/config.json"),
                Route::ClientConfig,
                refuse(405, "method_not_allowed", "GET only", false),
            ),
            (facts("GET", "/api/health"), Route::Api, api.clone()),
            (facts("POST", "/api/sync/push"), Route::Api, api.clone()),
            (
                facts("GET", "http://other.ma/api/health"),
                Route::Api,
                api.clone(),
            ),
            (
                facts("GET", "/socket.io/?EIO=4&transport=polling"),
                Route::Realtime,
                polling(None),
            ),
            (
                facts("GET", "/socket.io/?EIO=4&transport=polling&sid=00abc"),
                Route::Realtime,
                polling(Some(0)),
            ),
            (
                facts("POST", "/socket.io/?EIO=4&transport=polling&sid=00abc"),
                Route::Realtime,
                Action::Forward {
                    sticky: Some(0),
                    read_timeout: s.api_read_timeout,
                },
            ),
            (
                Facts {
                    websocket: true,
                    ..facts("GET", "/socket.io/?EIO=4&transport=websocket")
                },
                Route::Realtime,
                Action::Upgrade { sticky: None },
            ),
            (
                Facts {
                    websocket: true,
                    ..facts("GET", "/api/x")
                },
                Route::Api,
                api.clone(),
            ),
            (
                Facts {
                    content_length: Some(s.max_body_bytes + 1),
                    ..facts("POST", "/api/sync/push")
                },
                Route::Api,
                refuse(
                    413,
                    "payload_too_large",
                    "request body is larger than the gateway accepts",
                    true,
                ),
            ),
            (
                Facts {
                    content_length: Some(s.max_body_bytes),
                    ..facts("POST", "/api/sync/push")
                },
                Route::Api,
                api.clone(),
            ),
            (
                facts("GET", "/api/%2e%2e/etc"),
                Route::Static,
                refuse(400, "bad_path", "'.' or '..' path segment", false),
            ),
            (
                facts("GET", "/a%2fb"),
                Route::Static,
                refuse(400, "bad_path", "encoded path separator", false),
            ),
            (
                facts("GET", "*"),
                Route::Static,
                refuse(400, "bad_path", "path must start with '/'", false),
            ),
            (
                facts("CONNECT", "example.ma:443"),
                Route::Static,
                refuse(405, "method_not_allowed", "CONNECT is not proxied", true),
            ),
        ];
        for (f, route, action) in table {
            let d = decide(&f, &s, 2);
            assert_eq!(
                (d.route, &d.action),
                (route, &action),
                "{} {}",
                f.method,
                f.target
            );
            assert_eq!(d.request_id.len(), 32);
        }
    }

    #[test]
    fn plain_http_is_redirected_before_anything_else_when_configured() {
        let s = settings(|c| {
            c.gateway.tls_listen = Some("0.0.0.0:8443".into());
            c.gateway.redirect_http = true;
        });
        for target in ["/", "/api/health?x=1", "/socket.io/?EIO=4", "/%2e%2e/x"] {
            let d = decide(&facts("GET", target), &s, 1);
            assert_eq!(
                d.action,
                Action::Redirect(format!("https://btp.example.ma:8443{target}")),
                "{target}"
            );
        }
        let over_tls = Facts {
            client: Client {
                tls: true,
                ..facts("GET", "/").client
            },
            ..facts("GET", "/")
        };
        assert!(matches!(decide(&over_tls, &s, 1).action, Action::Static(_)));
        let no_host = Facts {
            host: None,
            ..facts("GET", "/")
        };
        assert!(matches!(decide(&no_host, &s, 1).action, Action::Static(_)));
    }

    #[test]
    fn acme_challenges_are_answered_over_plain_http_even_when_everything_else_is_redirected() {
        let s = settings(|c| {
            c.gateway.tls_listen = Some("0.0.0.0:8443".into());
            c.gateway.redirect_http = true;
        });
        let nothing = no_such_challenge();
        let table = [
            (
                "GET",
                "/.well-known/acme-challenge/Xy_9-aBc",
                Action::AcmeChallenge("Xy_9-aBc".into()),
            ),
            (
                "HEAD",
                "/.well-known/acme-challenge/tok",
                Action::AcmeChallenge("tok".into()),
            ),
            (
                "POST",
                "/.well-known/acme-challenge/tok",
                refuse(405, "method_not_allowed", "GET only", false),
            ),
            ("GET", "/.well-known/acme-challenge/", nothing.clone()),
            ("GET", "/.well-known/acme-challenge", nothing.clone()),
            ("GET", "/.well-known/acme-challenge/a/b", nothing.clone()),
            ("GET", "/.well-known/acme-challenge/%2e%2e", nothing.clone()),
            ("GET", "/.well-known/acme-challenge/to.ken", nothing.clone()),
        ];
        for (method, target, want) in table {
            let d = decide(&facts(method, target), &s, 1);
            assert_eq!(
                (d.route, d.action),
                (Route::AcmeChallenge, want),
                "{method} {target}"
            );
        }
        let long = format!("/.well-known/acme-challenge/{}", "a".repeat(257));
        assert_eq!(decide(&facts("GET", &long), &s, 1).action, nothing);
        // Anything else under /.well-known/ is redirected like the rest.
        assert!(matches!(
            decide(&facts("GET", "/.well-known/security.txt"), &s, 1).action,
            Action::Redirect(_)
        ));
    }

    #[test]
    fn a_request_id_is_kept_only_from_a_trusted_proxy() {
        let s = settings(|_| {});
        let from = |trusted| Facts {
            request_id: Some("req-7"),
            client: Client {
                trusted,
                ..facts("GET", "/").client
            },
            ..facts("GET", "/")
        };
        assert_eq!(decide(&from(true), &s, 1).request_id, "req-7");
        assert_ne!(decide(&from(false), &s, 1).request_id, "req-7");
    }
}
