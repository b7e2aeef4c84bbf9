//! The HTTP surface of the API process: route table, request extractors (JSON body with
//! a size limit, bearer auth, client IP, client session), CORS for the allowed origins,
//! and the JSON 404/405. Handlers are thin: parse, call a service, shape the reply.
//!
//! Seam for the realtime layer: [`router`] returns the API routes; the caller may merge
//! more (e.g. a `/socket.io/` service) and then calls [`finish`], which adds the
//! fallbacks and the layers that apply to every route.

mod account;
mod ops;
mod projects;
mod sync;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::auth::token_hash;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;
use crate::store::{Caller, UserRecord};

/// Header naming the client session a REST write comes from (the web app sends its
/// `clientSessionId`), so the realtime layer does not echo the change back to it.
pub const SESSION_HEADER: &str = "x-client-session-id";
/// Header carrying a client-chosen op id for a REST write, making retries idempotent.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The API routes, with state applied.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(ops::health))
        .route("/metrics", get(ops::metrics))
        .route("/api/auth/register", post(account::register))
        .route("/api/auth/login", post(account::login))
        .route("/api/auth/logout", post(account::logout))
        .route("/api/auth/logout-all", post(account::logout_all))
        .route("/api/auth/me", get(account::me))
        .route("/api/projects", get(projects::list).post(projects::create))
        .route(
            "/api/projects/{id}",
            get(projects::show)
                .patch(projects::update)
                .delete(projects::delete),
        )
        .route("/api/projects/{id}/history", get(projects::history))
        .route("/api/sync/pull", post(sync::pull))
        .route("/api/sync/push", post(sync::push))
        .with_state(state)
}

/// Fallbacks and the layers every route gets (CORS, error counting).
pub fn finish(router: Router, state: AppState) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state, edge))
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// CORS for `Config::allowed_origins()` (Electron's scheme, `null` for `file://` pages,
/// the public URL), and the per-code error counter.
async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| state.config.allowed_origins().iter().any(|a| a == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = match (&origin, preflight) {
        (Some(_), true) => StatusCode::NO_CONTENT.into_response(),
        _ => next.run(req).await,
    };
    if let Some(origin) = origin {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, PATCH, DELETE, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(
                    "authorization, content-type, x-client-session-id, idempotency-key",
                ),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
        state.metrics.errors.with_label_values(&[code]).inc();
    }
    response
}

/// A JSON body of at most `gateway.max_body_bytes` (the gateway enforces the same
/// limit; this one protects the API when reached directly).
pub struct JsonBody(pub Value);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = usize::try_from(state.config.gateway.max_body_bytes).unwrap_or(usize::MAX);
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the body exceeds {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let body: Body = req.into_body();
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("cannot read the body: {e}"),
                ))
            }
        };
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(ApiError::invalid_json)
    }
}

/// The caller, from `Authorization: Bearer <token>`.
pub struct Authed {
    pub user: UserRecord,
    /// The user and the token's hash, for the sync store's token check.
    pub caller: Caller,
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let bearer = state
            .auth
            .authenticate(token)
            .await?
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Authed {
            caller: Caller {
                user_id: bearer.user.id.clone(),
                token_hash: token_hash(token),
            },
            user: bearer.user,
        })
    }
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= 256)
        .then_some(token)
}

/// The client's IP: the last `X-Forwarded-For` entry (the one the gateway appended; the
/// API listens on loopback, so only the gateway reaches it), else the peer address.
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && v.len() <= 64);
        let peer = || {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_string())
        };
        Ok(ClientIp(
            forwarded.or_else(peer).unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// A bounded header value, or `None`.
fn header_text(headers: &HeaderMap, name: &str, max: usize) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.chars().count() <= max)
        .map(str::to_string)
}

/// The origin session of a request: `X-Client-Session-Id`, if any.
pub fn session_header(headers: &HeaderMap) -> Option<String> {
    header_text(headers, SESSION_HEADER, 200)
}

/// A string field of a JSON object body.
fn string_field<'a>(body: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ApiError::invalid(key, "must be a string")),
        None => Err(ApiError::invalid(key, "is required")),
    }
}
