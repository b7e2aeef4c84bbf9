//! Operator routes: `GET /api/health` (the gateway's health check) and `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::state::AppState;

pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ok", "worker": state.worker, "db": "ok"})),
        ),
        Err(e) => {
            tracing::error!(error = %e, "[API] HEALTH database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "degraded", "worker": state.worker, "db": "error"})),
            )
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state
        .metrics
        .pool_size
        .set(i64::from(state.store.pool_size()));
    state
        .metrics
        .pool_idle
        .set(i64::try_from(state.store.pool_idle()).unwrap_or(i64::MAX));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
