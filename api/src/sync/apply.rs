//! How a batch of ops changes a user's projects: the whole decision, with no IO.
//!
//! The store loads the user's `sync_state`, the rows the ops name and the acks already
//! stored for their op ids, calls [`apply`], and writes back what it returns, all in one
//! transaction. Rules (docs/SYNC.md):
//! - an op id seen before answers its stored ack and changes nothing;
//! - `create` of a new id inserts; of a live id it writes the sent fields over the row
//!   (a retried create after a lost ack must not fail); of a deleted id it is a conflict;
//! - `update` writes only the sent fields (field-level last writer wins, in server
//!   order); of a deleted row it is a conflict, never a resurrection;
//! - `delete` of a live row writes the tombstone; of a tombstone it is applied without a
//!   new change. This is the only place a tombstone is ever created.
//! - ids the user does not own do not exist for them: `not_found`, never a hint.

use std::collections::HashMap;

use super::checksum::Checksum;
use super::{Ack, Op, OpInput, OpKind, SyncState};
use crate::project::Project;

/// What an applied op did, beyond its ack (the REST routes need the difference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A new seq was assigned and the row changed.
    Changed,
    /// Accepted without a change: an empty update, or a delete of a tombstone.
    Unchanged,
    /// The op id was seen before; the ack is the stored one.
    Duplicate,
    /// Conflict or rejection.
    Refused,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ack: Ack,
    pub effect: Effect,
    pub kind: Option<OpKind>,
}

/// Everything the store writes and returns for one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// One per op, in op order.
    pub outcomes: Vec<Outcome>,
    /// Acks to store, keyed by their op id (first answers only).
    pub new_acks: Vec<Ack>,
    /// Final state of each changed row, in seq order.
    pub writes: Vec<Project>,
    pub state: SyncState,
    pub from: i64,
}

impl Applied {
    pub fn to(&self) -> i64 {
        self.state.seq
    }
}

/// Apply `ops` in order to `rows` (the user's current rows for the ids the ops name,
/// tombstones included) given the acks already stored for their op ids.
pub fn apply(
    state: SyncState,
    mut rows: HashMap<String, Project>,
    mut stored_acks: HashMap<String, Ack>,
    ops: Vec<OpInput>,
    now: i64,
) -> Applied {
    let from = state.seq;
    let mut seq = state.seq;
    // Each changed id's state before the batch: what the count and checksum lose.
    let mut before: HashMap<String, Option<i64>> = HashMap::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut new_acks = Vec::new();

    for input in ops {
        let (op, kind) = match input {
            OpInput::Invalid { ack, store } => {
                let outcome = match stored_acks.get(&ack.op_id) {
                    Some(prev) if store => duplicate(prev.clone(), None),
                    _ => {
                        if store {
                            stored_acks.insert(ack.op_id.clone(), ack.clone());
                            new_acks.push(ack.clone());
                        }
                        refused(ack, None)
                    }
                };
                outcomes.push(outcome);
                continue;
            }
            OpInput::Valid(op) => {
                let kind = op.kind;
                (op, kind)
            }
        };
        if let Some(prev) = stored_acks.get(&op.op_id) {
            outcomes.push(duplicate(prev.clone(), Some(kind)));
            continue;
        }
        let current = rows.get(&op.id);
        let (outcome, new_row) = decide(&op, current, seq + 1, now);
        if let Some(row) = new_row {
            seq += 1;
            before
                .entry(op.id.clone())
                .or_insert_with(|| current.filter(|r| r.is_live()).map(|r| r.seq));
            rows.insert(op.id.clone(), row);
        }
        stored_acks.insert(op.op_id.clone(), outcome.ack.clone());
        new_acks.push(outcome.ack.clone());
        outcomes.push(outcome);
    }

    let mut live_count = state.live_count;
    let mut checksum = state.checksum;
    let mut writes = Vec::with_capacity(before.len());
    for (id, old_seq) in before {
        if let Some(old) = old_seq {
            live_count -= 1;
            checksum.toggle(Checksum::row(&id, old));
        }
        if let Some(row) = rows.remove(&id) {
            if row.is_live() {
                live_count += 1;
                checksum.toggle(Checksum::row(&id, row.seq));
            }
            writes.push(row);
        }
    }
    writes.sort_by_key(|r| r.seq);

    Applied {
        outcomes,
        new_acks,
        writes,
        state: SyncState {
            seq,
            purged_seq: state.purged_seq,
            live_count,
            checksum,
        },
        from,
    }
}

/// The decision for one op against the row it names. Returns the ack and, when the row
/// changes, its new state stamped with `next_seq`.
fn decide(
    op: &Op,
    current: Option<&Project>,
    next_seq: i64,
    now: i64,
) -> (Outcome, Option<Project>) {
    let kind = Some(op.kind);
    let conflict = || {
        refused(
            Ack::conflict(&op.op_id, "the project was deleted; a delete is final"),
            kind,
        )
    };
    let not_found = || {
        refused(
            Ack::rejected(&op.op_id, "not_found", "no such project", Some("id")),
            kind,
        )
    };
    let changed = |mut row: Project| {
        row.seq = next_seq;
        let outcome = Outcome {
            ack: Ack::applied(&op.op_id, next_seq),
            effect: Effect::Changed,
            kind,
        };
        (outcome, Some(row))
    };
    let invalid = |errors: Vec<_>| (refused(Ack::invalid_fields(&op.op_id, &errors), kind), None);

    match (op.kind, current) {
        (OpKind::Create, None) => match Project::create(op.id.clone(), &op.patch, now) {
            Ok(row) => changed(row),
            Err(errors) => invalid(errors),
        },
        (OpKind::Create | OpKind::Update, Some(row)) if !row.is_live() => (conflict(), None),
        (OpKind::Create | OpKind::Update, Some(row)) if op.patch.is_empty() => {
            let outcome = Outcome {
                ack: Ack::applied(&op.op_id, row.seq),
                effect: Effect::Unchanged,
                kind,
            };
            (outcome, None)
        }
        (OpKind::Create | OpKind::Update, Some(row)) => match row.patched(&op.patch, now) {
            Ok(row) => changed(row),
            Err(errors) => invalid(errors),
        },
        (OpKind::Update | OpKind::Delete, None) => (not_found(), None),
        (OpKind::Delete, Some(row)) if !row.is_live() => {
            let outcome = Outcome {
                ack: Ack::applied(&op.op_id, row.seq),
                effect: Effect::Unchanged,
                kind,
            };
            (outcome, None)
        }
        (OpKind::Delete, Some(row)) => {
            let mut row = row.clone();
            row.deleted_at = Some(now);
            row.updated_at = now;
            changed(row)
        }
    }
}

fn refused(ack: Ack, kind: Option<OpKind>) -> Outcome {
    Outcome {
        ack,
        effect: Effect::Refused,
        kind,
    }
}

fn duplicate(ack: Ack, kind: Option<OpKind>) -> Outcome {
    Outcome {
        ack,
        effect: Effect::Duplicate,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{parse_op, AckStatus};
    use serde_json::json;

    const A: &str = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
    const B: &str = "7f9619ff-8b86-d011-b42d-00c04fc964ff";

    fn op(v: serde_json::Value) -> OpInput {
        parse_op(&v)
    }

    fn empty() -> SyncState {
        SyncState {
            seq: 0,
            purged_seq: 0,
            live_count: 0,
            checksum: Checksum::default(),
        }
    }

    fn rows_of(applied: &Applied) -> HashMap<String, Project> {
        applied
            .writes
            .iter()
            .map(|r| (r.id.clone(), r.clone()))
            .collect()
    }

    #[test]
    fn seqs_are_consecutive_and_state_tracks_the_live_set() {
        let out = apply(
            empty(),
            HashMap::new(),
            HashMap::new(),
            vec![
                op(json!({"op_id": "1", "kind": "create", "id": A, "data": {"name": "a"}})),
                op(json!({"op_id": "2", "kind": "create", "id": B, "data": {"name": "b"}})),
                op(json!({"op_id": "3", "kind": "update", "id": A, "data": {"progress": 50}})),
            ],
            10,
        );
        assert_eq!((out.from, out.to()), (0, 3));
        assert_eq!(out.state.live_count, 2);
        let seqs: Vec<_> = out.writes.iter().map(|r| (r.id.as_str(), r.seq)).collect();
        assert_eq!(seqs, vec![(B, 2), (A, 3)]);
        assert_eq!(out.state.checksum, Checksum::of([(A, 3), (B, 2)]));
        assert_eq!(out.writes[1].progress, 50);
    }

    #[test]
    fn delete_is_final_and_only_a_delete_op_makes_a_tombstone() {
        let first = apply(
            empty(),
            HashMap::new(),
            HashMap::new(),
            vec![op(
                json!({"op_id": "1", "kind": "create", "id": A, "data": {"name": "a"}}),
            )],
            1,
        );
        let second = apply(
            first.state,
            rows_of(&first),
            HashMap::new(),
            vec![
                op(json!({"op_id": "2", "kind": "delete", "id": A})),
                op(json!({"op_id": "3", "kind": "update", "id": A, "data": {"name": "z"}})),
                op(json!({"op_id": "4", "kind": "create", "id": A, "data": {"name": "z"}})),
                op(json!({"op_id": "5", "kind": "delete", "id": A})),
            ],
            2,
        );
        let statuses: Vec<_> = second.outcomes.iter().map(|o| o.ack.status).collect();
        assert_eq!(
            statuses,
            [
                AckStatus::Applied,
                AckStatus::Conflict,
                AckStatus::Conflict,
                AckStatus::Applied
            ]
        );
        assert_eq!(second.outcomes[3].effect, Effect::Unchanged);
        assert_eq!(second.state.live_count, 0);
        assert_eq!(second.state.checksum, Checksum::default());
        assert_eq!(second.writes.len(), 1);
        assert_eq!(second.writes[0].deleted_at, Some(2));
    }

    #[test]
    fn a_resent_op_returns_its_stored_ack_and_changes_nothing() {
        let ops = || {
            vec![op(
                json!({"op_id": "1", "kind": "create", "id": A, "data": {"name": "a"}}),
            )]
        };
        let first = apply(empty(), HashMap::new(), HashMap::new(), ops(), 1);
        let acks: HashMap<_, _> = first
            .new_acks
            .iter()
            .map(|a| (a.op_id.clone(), a.clone()))
            .collect();
        let again = apply(first.state, rows_of(&first), acks, ops(), 2);
        assert_eq!(again.outcomes[0].ack, first.outcomes[0].ack);
        assert_eq!(again.outcomes[0].effect, Effect::Duplicate);
        assert!(again.writes.is_empty());
        assert_eq!(again.state, first.state);
    }

    #[test]
    fn invalid_ops_are_rejected_while_valid_ones_apply() {
        let out = apply(
            empty(),
            HashMap::new(),
            HashMap::new(),
            vec![
                op(json!({"op_id": "1", "kind": "create", "id": A, "data": {"name": ""}})),
                op(json!({"op_id": "2", "kind": "update", "id": A, "data": {"name": "x"}})),
                op(json!({"op_id": "3", "kind": "create", "id": B, "data": {"name": "b"}})),
            ],
            1,
        );
        let reasons: Vec<_> = out
            .outcomes
            .iter()
            .map(|o| o.ack.reason.clone().unwrap_or_default())
            .collect();
        assert_eq!(reasons, ["validation_failed", "not_found", ""]);
        assert_eq!(out.state.live_count, 1);
        assert_eq!(out.to(), 1);
    }
}
