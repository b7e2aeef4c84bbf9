//! `/api/projects` REST routes. Every write is turned into one sync op and goes through
//! the same pipeline as a push (same seq, same ack store, same bus batch), so REST and
//! sync clients can never disagree. The op id is `Idempotency-Key` when sent (a retried
//! request is then a no-op), else a fresh one; the origin session is
//! `X-Client-Session-Id` when sent, else a one-off `rest-<uuid>` so the change is
//! broadcast to every open session.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{header_text, session_header, Authed, JsonBody, IDEMPOTENCY_HEADER};
use crate::error::ApiError;
use crate::project::{parse_id, Patch, Project};
use crate::state::AppState;
use crate::sync::apply::Effect;
use crate::sync::{Ack, AckStatus, Op, OpKind, OP_ID_MAX};

pub async fn list(State(state): State<AppState>, authed: Authed) -> Result<Response, ApiError> {
    let (projects, sync) = state.store.live_projects(&authed.user.id).await?;
    Ok(Json(json!({
        "projects": projects,
        "count": sync.live_count,
        "cursor": sync.seq,
        "checksum": sync.checksum.to_hex(),
    }))
    .into_response())
}

pub async fn show(
    State(state): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
) -> Result<Json<Project>, ApiError> {
    let id = parse_id(&id).ok_or_else(ApiError::not_found)?;
    state
        .store
        .live_project(&authed.user.id, &id)
        .await?
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// `GET /api/projects/{id}/history?limit=N`: who changed what, newest first (N from 1 to
/// 200, 50 by default). Another user's project does not exist for the caller.
pub async fn history(
    State(state): State<AppState>,
    authed: Authed,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id).ok_or_else(ApiError::not_found)?;
    let limit = match query.get("limit") {
        None => HISTORY_LIMIT_DEFAULT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=HISTORY_LIMIT_MAX).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be a whole number from 1 to 200"))?,
    };
    let entries = state
        .store
        .history(&authed.user.id, &id, limit)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(json!({ "entries": entries })))
}

const HISTORY_LIMIT_DEFAULT: i64 = 50;
const HISTORY_LIMIT_MAX: i64 = 200;

pub async fn create(
    State(state): State<AppState>,
    authed: Authed,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("body", "must be a JSON object"))?;
    let id = match obj.get("id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(s)) => {
            parse_id(s).ok_or_else(|| ApiError::invalid("id", "must be a UUID"))?
        }
        Some(_) => return Err(ApiError::invalid("id", "must be a UUID")),
    };
    let patch = Patch::from_map(obj).map_err(|e| ApiError::validation(&e))?;
    let (ack, _) = write(&state, &authed, &headers, OpKind::Create, &id, patch).await?;
    refusal(&ack)?;
    let project = current(&state, &authed, &id).await?;
    Ok((StatusCode::CREATED, Json(project)).into_response())
}

pub async fn update(
    State(state): State<AppState>,
    authed: Authed,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Project>, ApiError> {
    let id = parse_id(&id).ok_or_else(ApiError::not_found)?;
    let patch = Patch::from_json(&body).map_err(|e| ApiError::validation(&e))?;
    let (ack, _) = write(&state, &authed, &headers, OpKind::Update, &id, patch).await?;
    refusal(&ack)?;
    current(&state, &authed, &id).await.map(Json)
}

pub async fn delete(
    State(state): State<AppState>,
    authed: Authed,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id).ok_or_else(ApiError::not_found)?;
    let (ack, effect) = write(
        &state,
        &authed,
        &headers,
        OpKind::Delete,
        &id,
        Patch::default(),
    )
    .await?;
    refusal(&ack)?;
    match effect {
        // Deleting what is already gone: to REST the project does not exist.
        Effect::Unchanged => Err(ApiError::not_found()),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

async fn write(
    state: &AppState,
    authed: &Authed,
    headers: &HeaderMap,
    kind: OpKind,
    id: &str,
    patch: Patch,
) -> Result<(Ack, Effect), ApiError> {
    let op_id = header_text(headers, IDEMPOTENCY_HEADER, OP_ID_MAX)
        .unwrap_or_else(|| format!("rest-{}", uuid::Uuid::new_v4()));
    let session =
        session_header(headers).unwrap_or_else(|| format!("rest-{}", uuid::Uuid::new_v4()));
    let op = Op {
        op_id,
        kind,
        id: id.to_string(),
        patch,
        base_seq: None,
    };
    state.sync.rest_op(&authed.caller, op, &session).await
}

/// Map a conflict or rejection ack to its HTTP error.
fn refusal(ack: &Ack) -> Result<(), ApiError> {
    let message = ack.message.clone().unwrap_or_default();
    match (ack.status, ack.reason.as_deref()) {
        (AckStatus::Applied, _) => Ok(()),
        (AckStatus::Conflict, _) => Err(ApiError::new(StatusCode::CONFLICT, "conflict", message)),
        (AckStatus::Rejected, Some("not_found")) => Err(ApiError::not_found()),
        (AckStatus::Rejected, _) => {
            let mut err = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                message.clone(),
            );
            if let Some(field) = &ack.field {
                err = err.with_field(field);
                err.fields.insert(field.clone(), message);
            }
            Err(err)
        }
    }
}

async fn current(state: &AppState, authed: &Authed, id: &str) -> Result<Project, ApiError> {
    state
        .store
        .live_project(&authed.user.id, id)
        .await?
        .ok_or_else(ApiError::not_found)
}
