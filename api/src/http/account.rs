//! `/api/auth/*`: register, login, logout (this token), logout-all (every token of the
//! user), and `me` (who a token belongs to).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{string_field, Authed, ClientIp, JsonBody};
use crate::auth::User;
use crate::error::ApiError;
use crate::state::AppState;

pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let email = string_field(&body, "email")?;
    let password = string_field(&body, "password")?;
    let name = string_field(&body, "name")?;
    let session = state.auth.register(email, password, name, &ip).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let email = string_field(&body, "email")?;
    let password = string_field(&body, "password")?;
    let session = state.auth.login(email, password, &ip).await?;
    Ok(Json(session))
}

pub async fn logout(State(state): State<AppState>, authed: Authed) -> Result<StatusCode, ApiError> {
    state.auth.logout(&authed.caller).await?;
    tracing::info!(user_id = %authed.user.id, "[AUTH] LOGOUT");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn logout_all(
    State(state): State<AppState>,
    authed: Authed,
) -> Result<StatusCode, ApiError> {
    let revoked = state.auth.logout_all(&authed.caller).await?;
    tracing::info!(user_id = %authed.user.id, revoked, "[AUTH] LOGOUT_ALL");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(authed: Authed) -> impl IntoResponse {
    Json(json!({ "user": User::from(&authed.user) }))
}
