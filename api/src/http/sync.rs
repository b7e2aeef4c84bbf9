//! `POST /api/sync/pull` and `POST /api/sync/push`: the body goes to the sync service
//! as is; `X-Client-Session-Id` stands in for a missing `session_id`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;

use super::{session_header, Authed, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;
use crate::sync::pull::PullResponse;
use crate::sync::service::PushResponse;

pub async fn pull(
    State(state): State<AppState>,
    authed: Authed,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Json<PullResponse>, ApiError> {
    let session = session_header(&headers);
    let response = state
        .sync
        .pull(&authed.caller, &body, session.as_deref())
        .await?;
    Ok(Json(response))
}

pub async fn push(
    State(state): State<AppState>,
    authed: Authed,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Json<PushResponse>, ApiError> {
    let session = session_header(&headers);
    let response = state
        .sync
        .push(&authed.caller, &body, session.as_deref())
        .await?;
    Ok(Json(response))
}
