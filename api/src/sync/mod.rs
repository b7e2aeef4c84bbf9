//! The sync engine: what a push does to a user's projects and what a pull returns.
//!
//! The decisions are pure ([`apply`] for pushes, [`pull`] for pulls, [`checksum`] for
//! the live-set digest): state and ops in, acks, rows to write and responses out, with
//! the clock as an argument. The store (`crate::store`) runs them inside its
//! transactions, and [`service`] adds the parts that are neither: logging, metrics, the
//! bus. The protocol and its reasoning are written down in docs/SYNC.md.

pub mod apply;
pub mod checksum;
pub mod pull;
pub mod service;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::project::{format_millis, parse_id, FieldError, Patch, Project};
use checksum::Checksum;

/// The per-user row every write transaction locks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncState {
    /// Seq of the user's last committed change (0 = none yet).
    pub seq: i64,
    /// Highest seq of a purged tombstone: a cursor below it may have missed a delete.
    pub purged_seq: i64,
    pub live_count: i64,
    pub checksum: Checksum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckStatus {
    Applied,
    Conflict,
    Rejected,
}

/// The answer to one op. Stored as is, so a re-sent op gets this same value back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub op_id: String,
    pub status: AckStatus,
    /// The row's seq after the op (applied ops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    /// Stable machine-readable reason (conflict and rejected acks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// A `stale` update: the fields not written, each with the server's value and the
    /// op's (the op's other fields were applied, and `seq` says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, Stale>>,
    /// A `stale` delete: the project as it is now, which the user did not see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Value>,
}

/// One field of a stale update: what the server has, what the op sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stale {
    pub current: Value,
    pub yours: Value,
}

impl Ack {
    pub fn applied(op_id: &str, seq: i64) -> Ack {
        Ack {
            op_id: op_id.to_string(),
            status: AckStatus::Applied,
            seq: Some(seq),
            reason: None,
            message: None,
            field: None,
            fields: None,
            project: None,
        }
    }

    pub fn conflict(op_id: &str, message: &str) -> Ack {
        Ack {
            op_id: op_id.to_string(),
            status: AckStatus::Conflict,
            seq: None,
            reason: Some("deleted".into()),
            message: Some(message.into()),
            field: None,
            fields: None,
            project: None,
        }
    }

    /// An update whose `fields` changed since the op's base: those were not written;
    /// `seq` is the row's new seq when the op's other fields were.
    pub fn stale_fields(op_id: &str, fields: BTreeMap<String, Stale>, seq: Option<i64>) -> Ack {
        Ack {
            op_id: op_id.to_string(),
            status: AckStatus::Conflict,
            seq,
            reason: Some("stale".into()),
            message: Some("changed on another device since this edit was made".into()),
            field: None,
            fields: Some(fields),
            project: None,
        }
    }

    /// A delete of a project that changed since the op's base: not applied.
    pub fn stale_delete(op_id: &str, project: Value) -> Ack {
        Ack {
            op_id: op_id.to_string(),
            status: AckStatus::Conflict,
            seq: None,
            reason: Some("stale".into()),
            message: Some("changed on another device since this delete was asked".into()),
            field: None,
            fields: None,
            project: Some(project),
        }
    }

    pub fn rejected(op_id: &str, reason: &str, message: &str, field: Option<&str>) -> Ack {
        Ack {
            op_id: op_id.to_string(),
            status: AckStatus::Rejected,
            seq: None,
            reason: Some(reason.into()),
            message: Some(message.into()),
            field: field.map(str::to_string),
            fields: None,
            project: None,
        }
    }

    fn invalid_fields(op_id: &str, errors: &[FieldError]) -> Ack {
        let message = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Ack::rejected(
            op_id,
            "validation_failed",
            &message,
            errors.first().map(|e| e.field.as_str()),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Create,
    Update,
    Delete,
}

impl OpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Update => "update",
            OpKind::Delete => "delete",
        }
    }
}

/// A well-formed op.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub op_id: String,
    pub kind: OpKind,
    pub id: String,
    pub patch: Patch,
    /// The row's seq in the sender's copy when the user made the edit; `None`: the op
    /// overwrites whatever is there (clients from before conflicts were reported).
    pub base_seq: Option<i64>,
}

/// An op as received: well formed, or already answered with a rejection. `store` says
/// whether the rejection may be stored under its op id (only when the op id itself is
/// valid).
#[derive(Debug, Clone, PartialEq)]
pub enum OpInput {
    Valid(Op),
    Invalid { ack: Ack, store: bool },
}

/// Longest accepted client op id.
pub const OP_ID_MAX: usize = 128;

/// Turn one element of a push's `ops` array into an [`OpInput`]. Never fails as a whole:
/// a malformed op becomes a per-op rejection (docs/SYNC.md, "Batch semantics").
pub fn parse_op(value: &Value) -> OpInput {
    let Some(obj) = value.as_object() else {
        return invalid("", "invalid_op", "an op must be an object", None, false);
    };
    let op_id = match obj.get("op_id") {
        Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= OP_ID_MAX => s.clone(),
        _ => {
            return invalid(
                "",
                "invalid_op_id",
                "op_id must be a string of 1 to 128 characters",
                Some("op_id"),
                false,
            )
        }
    };
    let kind = match obj.get("kind").and_then(Value::as_str) {
        Some("create") => OpKind::Create,
        Some("update") => OpKind::Update,
        Some("delete") => OpKind::Delete,
        _ => {
            return invalid(
                &op_id,
                "unknown_kind",
                "kind must be create, update or delete",
                Some("kind"),
                true,
            )
        }
    };
    let Some(id) = obj.get("id").and_then(Value::as_str).and_then(parse_id) else {
        return invalid(&op_id, "invalid_id", "id must be a UUID", Some("id"), true);
    };
    let base_seq = match obj.get("base_seq") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().filter(|n| *n >= 0) {
            Some(n) => Some(n),
            None => {
                return invalid(
                    &op_id,
                    "invalid_base_seq",
                    "base_seq must be a whole number, 0 or more",
                    Some("base_seq"),
                    true,
                )
            }
        },
    };
    let patch = match (kind, obj.get("data")) {
        (OpKind::Delete, _) | (_, None) => Patch::default(),
        (_, Some(data)) => match Patch::from_json(data) {
            Ok(p) => p,
            Err(errors) => {
                return OpInput::Invalid {
                    ack: Ack::invalid_fields(&op_id, &errors),
                    store: true,
                }
            }
        },
    };
    OpInput::Valid(Op {
        op_id,
        kind,
        id,
        patch,
        base_seq,
    })
}

fn invalid(op_id: &str, reason: &str, message: &str, field: Option<&str>, store: bool) -> OpInput {
    OpInput::Invalid {
        ack: Ack::rejected(op_id, reason, message, field),
        store,
    }
}

/// One entry of a pull's or a broadcast's `changes`: the row's state as of `seq`.
/// A tombstone carries no fields: nothing about a deleted project is needed to apply it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    Upsert {
        seq: i64,
        id: String,
        project: Box<Project>,
    },
    Delete {
        seq: i64,
        id: String,
        deleted_at: String,
    },
}

impl Change {
    pub fn of(row: Project) -> Change {
        match row.deleted_at {
            None => Change::Upsert {
                seq: row.seq,
                id: row.id.clone(),
                project: Box::new(row),
            },
            Some(at) => Change::Delete {
                seq: row.seq,
                id: row.id,
                deleted_at: format_millis(at),
            },
        }
    }

    pub fn seq(&self) -> i64 {
        match self {
            Change::Upsert { seq, .. } | Change::Delete { seq, .. } => *seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn malformed_ops_become_rejections_with_a_reason() {
        let cases = [
            (json!(5), "invalid_op", false),
            (json!({"kind": "create"}), "invalid_op_id", false),
            (
                json!({"op_id": "a", "kind": "merge", "id": "x"}),
                "unknown_kind",
                true,
            ),
            (
                json!({"op_id": "a", "kind": "update", "id": "x"}),
                "invalid_id",
                true,
            ),
            (
                json!({"op_id": "a", "kind": "update", "id": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "data": {"progress": "x"}}),
                "validation_failed",
                true,
            ),
            (
                json!({"op_id": "a", "kind": "update", "id": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "base_seq": -1}),
                "invalid_base_seq",
                true,
            ),
            (
                json!({"op_id": "a", "kind": "delete", "id": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "base_seq": "3"}),
                "invalid_base_seq",
                true,
            ),
        ];
        for (value, reason, stored) in cases {
            match parse_op(&value) {
                OpInput::Invalid { ack, store } => {
                    assert_eq!(ack.reason.as_deref(), Some(reason), "{value}");
                    assert_eq!(store, stored, "{value}");
                    assert_eq!(ack.status, AckStatus::Rejected);
                }
                OpInput::Valid(op) => panic!("accepted {op:?}"),
            }
        }
    }
}
