//! The sync engine's entry points for the transports (HTTP handlers and, through the
//! realtime layer, Socket.IO events): request JSON in, response or [`ApiError`] out.
//! This is where requests are validated as a whole (batch size, cursor, limit), where
//! the operator-facing `[SYNC]` log lines are written and the sync metrics counted; the
//! decisions themselves are in `apply` and `pull`, the IO in `crate::store`.

use std::sync::Arc;
use std::time::Instant;

use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use super::apply::{Applied, Effect};
use super::pull::{Cursor, PullResponse};
use super::{parse_op, Ack, Op, OpInput, OpKind};
use crate::auth::now_millis;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::store::{Caller, Store, Writer};

/// Longest accepted `client_id` / `session_id`.
const SESSION_ID_MAX: usize = 200;

/// Longest accepted `client_label` ("Chrome · Windows"), in characters.
const CLIENT_LABEL_MAX: usize = 80;

/// The device history names when a write says nothing of itself (REST, older clients).
pub const DEFAULT_DEVICE: &str = "API";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushResponse {
    pub acks: Vec<Ack>,
    /// The user's seq after this batch.
    pub cursor: i64,
    /// The user's seq before this batch: a client whose cursor equals `from` may move
    /// straight to `cursor`; any other client must pull to see what lies between.
    pub from: i64,
}

pub struct SyncService {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    config: btp_config::Sync,
}

fn optional_string(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= SESSION_ID_MAX => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::invalid(
            key,
            "must be a string of 1 to 200 characters",
        )),
    }
}

impl SyncService {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>, config: btp_config::Sync) -> SyncService {
        SyncService {
            store,
            metrics,
            config,
        }
    }

    /// `POST /api/sync/push` / `sync:push`. `default_session` is the transport's own
    /// session id (the socket's `clientSessionId`, or `X-Client-Session-Id`), used when
    /// the body has no `session_id`.
    pub async fn push(
        &self,
        caller: &Caller,
        body: &Value,
        default_session: Option<&str>,
    ) -> Result<PushResponse, ApiError> {
        let Some(obj) = body.as_object() else {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        };
        let client_id = optional_string(obj, "client_id")?;
        let session = optional_string(obj, "session_id")?
            .or_else(|| default_session.map(str::to_string))
            .ok_or_else(|| ApiError::invalid("session_id", "is required"))?;
        let device = match obj.get("client_label") {
            None | Some(Value::Null) => None,
            Some(Value::String(s))
                if !s.trim().is_empty()
                    && s.chars().count() <= CLIENT_LABEL_MAX
                    && !s.chars().any(char::is_control) =>
            {
                Some(s.trim().to_string())
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "client_label",
                    "must be a string of 1 to 80 characters, without control characters",
                ))
            }
        };
        let ops = match obj.get("ops") {
            Some(Value::Array(ops)) => ops,
            _ => return Err(ApiError::invalid("ops", "must be an array")),
        };
        let max = self.config.max_batch_ops as usize;
        if ops.len() > max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                format!("a push carries at most {max} ops; split the batch"),
            )
            .with_field("ops"));
        }
        let inputs = ops.iter().map(parse_op).collect();
        let writer = Writer {
            session: Some(&session),
            device: device.as_deref().unwrap_or(DEFAULT_DEVICE),
        };
        let applied = self
            .apply(caller, inputs, writer, client_id.as_deref())
            .await?;
        Ok(PushResponse {
            acks: applied.outcomes.into_iter().map(|o| o.ack).collect(),
            cursor: applied.state.seq,
            from: applied.from,
        })
    }

    /// Apply ops through the one pipeline every write takes (sync pushes and REST).
    pub async fn apply(
        &self,
        caller: &Caller,
        inputs: Vec<OpInput>,
        writer: Writer<'_>,
        client_id: Option<&str>,
    ) -> Result<Applied, ApiError> {
        let started = Instant::now();
        let count = inputs.len();
        let session = writer.session;
        let applied = self
            .store
            .push(caller, inputs, now_millis(), writer)
            .await?;
        let user_id = caller.user_id.as_str();
        self.metrics
            .push_seconds
            .observe(started.elapsed().as_secs_f64());
        self.log_push(user_id, session, client_id, count, &applied);
        Ok(applied)
    }

    fn log_push(
        &self,
        user_id: &str,
        session: Option<&str>,
        client_id: Option<&str>,
        count: usize,
        applied: &Applied,
    ) {
        let session = session.unwrap_or("-");
        let client = client_id.unwrap_or("-");
        let (mut creates, mut changed, mut refused, mut duplicates) = (0, 0, 0, 0);
        for o in &applied.outcomes {
            let kind = o.kind.map(OpKind::as_str).unwrap_or("invalid");
            let status = match o.effect {
                Effect::Duplicate => "duplicate",
                _ => match o.ack.status {
                    super::AckStatus::Applied => "applied",
                    super::AckStatus::Conflict => "conflict",
                    super::AckStatus::Rejected => "rejected",
                },
            };
            self.metrics.ops.with_label_values(&[kind, status]).inc();
            match o.effect {
                Effect::Changed => {
                    changed += 1;
                    if o.kind == Some(OpKind::Create) {
                        creates += 1;
                    }
                    if o.kind == Some(OpKind::Delete) {
                        tracing::info!(
                            user_id, session_id = session, op_id = %o.ack.op_id,
                            seq = o.ack.seq.unwrap_or_default(), "[SYNC] DELETE"
                        );
                    }
                }
                Effect::Refused => {
                    refused += 1;
                    tracing::warn!(
                        user_id, session_id = session, op_id = %o.ack.op_id, kind,
                        status, reason = o.ack.reason.as_deref().unwrap_or("-"),
                        "[SYNC] OP_REFUSED"
                    );
                }
                Effect::Duplicate => duplicates += 1,
                Effect::Unchanged => {}
            }
        }
        if creates > 0 {
            tracing::info!(
                user_id,
                session_id = session,
                count = creates,
                "[SYNC] BULK_CREATE projects"
            );
        }
        tracing::info!(
            user_id,
            session_id = session,
            client_id = client,
            ops = count,
            changed,
            refused,
            duplicates,
            from = applied.from,
            to = applied.state.seq,
            "[SYNC] PUSH"
        );
    }

    /// `POST /api/sync/pull` / `sync:pull`.
    pub async fn pull(
        &self,
        caller: &Caller,
        body: &Value,
        default_session: Option<&str>,
    ) -> Result<PullResponse, ApiError> {
        let started = Instant::now();
        let user_id = caller.user_id.as_str();
        let Some(obj) = body.as_object() else {
            return Err(ApiError::invalid("body", "must be a JSON object"));
        };
        let session = optional_string(obj, "session_id")?;
        let session = session.as_deref().or(default_session).unwrap_or("-");
        let cursor = match obj.get("cursor") {
            Some(v) => Cursor::parse(v).ok_or_else(|| {
                ApiError::invalid(
                    "cursor",
                    "must be a non-negative integer or a cursor returned by a pull",
                )
            })?,
            None => {
                return Err(ApiError::invalid(
                    "cursor",
                    "is required (0 for a snapshot)",
                ))
            }
        };
        let limit = match obj.get("limit") {
            None | Some(Value::Null) => self.config.pull_limit_default,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => u32::try_from(n)
                    .unwrap_or(u32::MAX)
                    .min(self.config.pull_limit_max),
                _ => return Err(ApiError::invalid("limit", "must be a positive integer")),
            },
        };
        let snapshot_start = cursor == Cursor::Seq(0);
        if snapshot_start {
            tracing::info!(user_id, session_id = session, "[SYNC] INIT_SYNC_START");
        }
        let response = self
            .store
            .pull(caller, cursor, limit as usize, now_millis())
            .await?;
        if response.reset && !snapshot_start {
            tracing::warn!(
                user_id, session_id = session, cursor = %cursor_text(cursor),
                "[SYNC] RESET unknown or expired cursor; sending a snapshot"
            );
        }
        if snapshot_start || response.reset {
            tracing::info!(
                user_id,
                session_id = session,
                rows = response.changes.len(),
                count = response.count,
                has_more = response.has_more,
                "[SYNC] INIT_SYNC_DONE"
            );
        } else {
            tracing::debug!(
                user_id, session_id = session, cursor = %cursor_text(cursor),
                rows = response.changes.len(), has_more = response.has_more, "[SYNC] PULL"
            );
        }
        self.metrics
            .pull_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(response)
    }

    /// One REST write: the same pipeline as a one-op push.
    pub async fn rest_op(
        &self,
        caller: &Caller,
        op: Op,
        session: &str,
    ) -> Result<(Ack, Effect), ApiError> {
        let applied = self
            .apply(
                caller,
                vec![OpInput::Valid(op)],
                Writer {
                    session: Some(session),
                    device: DEFAULT_DEVICE,
                },
                Some("rest"),
            )
            .await?;
        applied
            .outcomes
            .into_iter()
            .next()
            .map(|o| (o.ack, o.effect))
            .ok_or_else(ApiError::internal)
    }
}

fn cursor_text(cursor: Cursor) -> String {
    cursor.to_json().to_string()
}
