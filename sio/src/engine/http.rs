//! HTTP vocabulary of the Engine.IO endpoint: the query parameters, the error answers
//! with the Node server's JSON codes, CORS headers for long-polling, and response
//! building. Kept apart from the session logic so every response shape lives in one place.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::config::Cors;

/// Body of every response the server produces.
pub type Body = BoxBody<Bytes, Infallible>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// The Engine.IO query parameters.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Query<'a> {
    pub eio: Option<&'a str>,
    pub transport: Option<&'a str>,
    pub sid: Option<&'a str>,
}

pub(crate) fn parse_query(query: &str) -> Query<'_> {
    let mut q = Query::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "EIO" => q.eio = Some(value),
            "transport" => q.transport = Some(value),
            "sid" => q.sid = Some(value),
            _ => {}
        }
    }
    q
}

/// The error codes the Node server sends as `{"code":N,"message":"..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
}

impl ErrorCode {
    fn message(self) -> &'static str {
        match self {
            ErrorCode::UnknownTransport => "Transport unknown",
            ErrorCode::UnknownSid => "Session ID unknown",
            ErrorCode::BadHandshakeMethod => "Bad handshake method",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

/// CORS headers decided once per request from its `Origin`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CorsHeaders {
    allow_origin: Option<HeaderValue>,
    credentials: bool,
}

impl CorsHeaders {
    pub fn for_request(cors: &Cors, headers: &HeaderMap) -> Self {
        match cors {
            Cors::Any => CorsHeaders {
                allow_origin: Some(HeaderValue::from_static("*")),
                credentials: false,
            },
            Cors::Origins(allowed) => {
                let origin = headers.get(header::ORIGIN);
                let allowed_origin = origin.filter(|o| {
                    o.to_str()
                        .is_ok_and(|o| allowed.iter().any(|a| a.as_str() == o))
                });
                CorsHeaders {
                    allow_origin: allowed_origin.cloned(),
                    credentials: allowed_origin.is_some(),
                }
            }
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(origin) = &self.allow_origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }
}

pub(crate) fn error(status: StatusCode, code: ErrorCode, cors: &CorsHeaders) -> Response<Body> {
    let body = format!(
        r#"{{"code":{},"message":"{}"}}"#,
        code as u8,
        code.message()
    );
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cors.apply(headers);
    response
}

pub(crate) fn bad_request(code: ErrorCode, cors: &CorsHeaders) -> Response<Body> {
    error(StatusCode::BAD_REQUEST, code, cors)
}

pub(crate) fn text(body: impl Into<Bytes>, cors: &CorsHeaders) -> Response<Body> {
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    cors.apply(headers);
    response
}

pub(crate) fn preflight(cors: &CorsHeaders, request: &HeaderMap) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    cors.apply(headers);
    if cors.allow_origin.is_some() {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        let allow_headers = request
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("content-type"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_in_any_order() {
        let q = parse_query("t=abc&sid=xyz&EIO=4&transport=polling");
        assert_eq!(
            q,
            Query {
                eio: Some("4"),
                transport: Some("polling"),
                sid: Some("xyz"),
            }
        );
        assert_eq!(parse_query(""), Query::default());
    }

    fn origin(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn allow_list_reflects_listed_origins_with_credentials_and_never_star() {
        let cors = Cors::Origins(vec!["https://a.example".into(), "null".into()]);
        for allowed in ["https://a.example", "null"] {
            let mut out = HeaderMap::new();
            CorsHeaders::for_request(&cors, &origin(allowed)).apply(&mut out);
            assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], allowed);
            assert_eq!(out[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        }
        let mut out = HeaderMap::new();
        CorsHeaders::for_request(&cors, &origin("https://evil.example")).apply(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn any_origin_is_star_without_credentials() {
        let mut out = HeaderMap::new();
        CorsHeaders::for_request(&Cors::Any, &origin("https://a.example")).apply(&mut out);
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(out.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
    }
}
