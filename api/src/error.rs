//! The one shape every client-visible error has, over HTTP and in Socket.IO acks:
//! `{"error": {"code", "message", "field"?, "fields"?}}` with a stable `code`
//! (docs/API.md lists them). Internal errors are logged here with their cause and
//! reach the client only as `internal`.

use std::collections::BTreeMap;
use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::project::FieldError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    /// Every failing field's message (`validation_failed` only).
    pub fields: BTreeMap<String, String>,
    /// Seconds, sent as `Retry-After` (`rate_limited`).
    pub retry_after: Option<u64>,
}

/// Attached to error responses so the metrics layer can count them by code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            fields: BTreeMap::new(),
            retry_after: None,
        }
    }

    pub fn with_field(mut self, field: &str) -> ApiError {
        self.field = Some(field.to_string());
        self
    }

    pub fn invalid_json(message: impl fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {message}"),
        )
    }

    /// 422 with every failing field.
    pub fn validation(errors: &[FieldError]) -> ApiError {
        let message = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut err = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        );
        err.field = errors.first().map(|e| e.field.clone());
        err.fields = errors
            .iter()
            .map(|e| (e.field.clone(), e.message.clone()))
            .collect();
        err
    }

    pub fn invalid(field: &str, message: &str) -> ApiError {
        ApiError::validation(&[FieldError::new(field, message)])
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: &str, retry_after_secs: u64) -> ApiError {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        err.retry_after = Some(retry_after_secs.max(1));
        err
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; it has been logged",
        )
    }

    /// The JSON body, also used verbatim as a Socket.IO ack.
    pub fn to_json(&self) -> Value {
        let mut inner = Map::new();
        inner.insert("code".into(), json!(self.code));
        inner.insert("message".into(), json!(self.message));
        if let Some(field) = &self.field {
            inner.insert("field".into(), json!(field));
        }
        if !self.fields.is_empty() {
            inner.insert("fields".into(), json!(self.fields));
        }
        json!({ "error": inner })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code, self.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        if let StoreError::Revoked = e {
            return ApiError::unauthorized();
        }
        tracing::error!(error = %e, "storage error");
        ApiError::internal()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.to_json())).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}
