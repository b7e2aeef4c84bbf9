//! How a batch of ops changes a user's projects: the whole decision, with no IO.
//!
//! The store loads the user's `sync_state`, the rows the ops name and the acks already
//! stored for their op ids, calls [`apply`], and writes back what it returns, all in one
//! transaction. Rules (docs/SYNC.md):
//! - an op id seen before answers its stored ack and changes nothing;
//! - `create` of a new id inserts; of a live id it writes the sent fields over the row
//!   (a retried create after a lost ack must not fail); of a deleted id it is a conflict;
//! - `update` writes only the sent fields; of a deleted row it is a conflict, never a
//!   resurrection. With a `base_seq`, a sent field that changed after it (on another
//!   device) and now holds another value is not written: the ack is a `stale` conflict
//!   naming it, and the op's other fields are applied. Without one, the sent fields win
//!   (clients from before conflicts were reported);
//! - `delete` of a live row writes the tombstone, unless its `base_seq` is older than
//!   the row's last change (a `stale` conflict: the user confirms on what is there now);
//!   of a tombstone it is applied without a new change. This is the only place a
//!   tombstone is ever created.
//! - ids the user does not own do not exist for them: `not_found`, never a hint.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Map, Value};

use super::checksum::Checksum;
use super::{Ack, Op, OpInput, OpKind, Stale, SyncState};
use crate::project::{Patch, Project, FIELDS};

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
    /// What each change did, in seq order: the project's history.
    pub history: Vec<Entry>,
    pub state: SyncState,
    pub from: i64,
}

/// One change of a project as its history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: i64,
    pub project_id: String,
    pub kind: OpKind,
    /// Field name → `{"from", "to"}`: every field of a create (`from` null), the fields an
    /// update changed, none for a delete.
    pub fields: Map<String, Value>,
}

impl Entry {
    /// The entry for `row` (just written at its seq) over `before` (`None`: new), whose
    /// field `changes` are [`Project::changes`].
    fn of(before: Option<&Project>, row: &Project, changes: Vec<(usize, Value, Value)>) -> Entry {
        let kind = match (before, row.is_live()) {
            (_, false) => OpKind::Delete,
            (None, true) => OpKind::Create,
            (Some(_), true) => OpKind::Update,
        };
        let fields = changes
            .into_iter()
            .map(|(i, from, to)| (FIELDS[i].to_string(), json!({"from": from, "to": to})))
            .collect();
        Entry {
            seq: row.seq,
            project_id: row.id.clone(),
            kind,
            fields,
        }
    }
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
    let mut history = Vec::new();
    // Rows as they were before the batch, kept once a row changes in a batch where some
    // op carries a base.
    let mut originals: HashMap<String, Option<Project>> = HashMap::new();
    let batch_has_bases = ops
        .iter()
        .any(|input| matches!(input, OpInput::Valid(op) if op.base_seq.is_some()));

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
        // What the row was before this batch: an op is never stale against an earlier op
        // of its own batch (one sender, which made them in that order).
        let original = match originals.get(&op.id) {
            Some(original) => original.as_ref(),
            None => current,
        };
        let (outcome, new_row) = decide(&op, current, original, seq + 1, now);
        if let Some(mut row) = new_row {
            seq += 1;
            // What changed, worked out once for the field seqs and the history.
            let changes = if row.is_live() {
                row.changes(current)
            } else {
                Vec::new()
            };
            if row.is_live() {
                row.mark_changed(current, &changes, seq);
            }
            let entry = Entry::of(current, &row, changes);
            // An update that wrote the values already there moves the row's seq but
            // changes nothing anyone would look for.
            if entry.kind != OpKind::Update || !entry.fields.is_empty() {
                history.push(entry);
            }
            before
                .entry(op.id.clone())
                .or_insert_with(|| current.filter(|r| r.is_live()).map(|r| r.seq));
            if batch_has_bases {
                originals
                    .entry(op.id.clone())
                    .or_insert_with(|| current.cloned());
            }
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
        history,
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
/// `original` is the row as it was before the batch, which is what an op's base is
/// compared with.
fn decide(
    op: &Op,
    current: Option<&Project>,
    original: Option<&Project>,
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
    // `row` is the new state of `before` (`None`: a new row); `ack` the answer, applied
    // unless said otherwise.
    // Field seqs and history are stamped by the caller, which sees every change.
    let changed = |mut row: Project, ack: Option<Ack>| {
        row.seq = next_seq;
        let outcome = Outcome {
            ack: ack.unwrap_or_else(|| Ack::applied(&op.op_id, next_seq)),
            effect: Effect::Changed,
            kind,
        };
        (outcome, Some(row))
    };
    let invalid = |errors: Vec<_>| (refused(Ack::invalid_fields(&op.op_id, &errors), kind), None);

    // The op's base, when the row changed after it before this batch.
    let stale_base = || {
        let original = original?;
        op.base_seq.filter(|base| original.seq > *base)
    };

    match (op.kind, current) {
        (OpKind::Create, None) => match Project::create(op.id.clone(), &op.patch, now) {
            Ok(row) => changed(row, None),
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
        (OpKind::Update, Some(row)) if stale_base().is_some() => {
            let base = stale_base().unwrap_or_default();
            let (patch, stale) = split_stale(&op.patch, row, original.unwrap_or(row), base);
            if stale.is_empty() {
                return match row.patched(&patch, now) {
                    Ok(new) => changed(new, None),
                    Err(errors) => invalid(errors),
                };
            }
            if patch.is_empty() {
                let ack = Ack::stale_fields(&op.op_id, stale, None);
                return (refused(ack, kind), None);
            }
            match row.patched(&patch, now) {
                Ok(new) => {
                    let ack = Ack::stale_fields(&op.op_id, stale, Some(next_seq));
                    changed(new, Some(ack))
                }
                Err(errors) => invalid(errors),
            }
        }
        (OpKind::Create | OpKind::Update, Some(row)) => match row.patched(&op.patch, now) {
            Ok(new) => changed(new, None),
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
        (OpKind::Delete, Some(row)) if stale_base().is_some() => {
            let current = serde_json::to_value(row).unwrap_or_default();
            (refused(Ack::stale_delete(&op.op_id, current), kind), None)
        }
        (OpKind::Delete, Some(row)) => {
            let mut gone = row.clone();
            gone.deleted_at = Some(now);
            gone.updated_at = now;
            changed(gone, None)
        }
    }
}

/// Split `patch` against `row` for an edit made on the row as of seq `base`: the fields
/// that may be written, and those that changed after `base` (before this batch: see
/// `original`) and now hold a value other than the one sent (a field sent with the value
/// it already has is no conflict).
fn split_stale(
    patch: &Patch,
    row: &Project,
    original: &Project,
    base: i64,
) -> (Patch, BTreeMap<String, Stale>) {
    let mut writable = patch.clone();
    let mut stale = BTreeMap::new();
    for (i, name) in FIELDS.iter().enumerate() {
        let Some(yours) = patch.value(i) else {
            continue;
        };
        let current = row.value(i);
        if original.field_seqs.last_change(i, original.seq) > base && current != yours {
            writable = writable.without(i);
            stale.insert(name.to_string(), Stale { current, yours });
        }
    }
    (writable, stale)
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

    /// A created at seq 1, then `progress` set to 30 by another device that had seq 1.
    fn edited_elsewhere() -> Applied {
        let first = apply(
            empty(),
            HashMap::new(),
            HashMap::new(),
            vec![op(
                json!({"op_id": "c", "kind": "create", "id": A, "data": {"name": "École", "city": "Fès"}}),
            )],
            1,
        );
        apply(
            first.state,
            rows_of(&first),
            HashMap::new(),
            vec![op(
                json!({"op_id": "b", "kind": "update", "id": A, "base_seq": 1, "data": {"progress": 30}}),
            )],
            2,
        )
    }

    /// `ops` applied at `now` after [`edited_elsewhere`].
    fn after_edit(ops: Vec<OpInput>, now: i64) -> Applied {
        let before = edited_elsewhere();
        apply(before.state, rows_of(&before), HashMap::new(), ops, now)
    }

    #[test]
    fn a_stale_field_is_not_written_and_the_others_are() {
        let before = edited_elsewhere();
        assert_eq!(before.outcomes[0].ack.status, AckStatus::Applied);
        let out = apply(
            before.state,
            rows_of(&before),
            HashMap::new(),
            vec![op(
                json!({"op_id": "a", "kind": "update", "id": A, "base_seq": 1,
                "data": {"progress": 15, "city": "Rabat", "name": "École"}}),
            )],
            3,
        );
        let ack = &out.outcomes[0].ack;
        assert_eq!(ack.status, AckStatus::Conflict);
        assert_eq!(ack.reason.as_deref(), Some("stale"));
        assert_eq!(ack.seq, Some(3));
        let fields = ack.fields.clone().unwrap_or_default();
        assert_eq!(fields.keys().collect::<Vec<_>>(), ["progress"]);
        assert_eq!(fields["progress"].current, json!(30));
        assert_eq!(fields["progress"].yours, json!(15));
        assert_eq!(out.outcomes[0].effect, Effect::Changed);
        let row = &out.writes[0];
        assert_eq!((row.progress, row.city.as_str(), row.seq), (30, "Rabat", 3));
        // The next stale edit of the city, made before seq 3, now conflicts too.
        let again = apply(
            out.state,
            rows_of(&out),
            HashMap::new(),
            vec![op(
                json!({"op_id": "d", "kind": "update", "id": A, "base_seq": 2,
                "data": {"city": "Tanger"}}),
            )],
            4,
        );
        assert_eq!(again.outcomes[0].ack.status, AckStatus::Conflict);
        assert_eq!(again.outcomes[0].ack.seq, None);
        assert_eq!(again.outcomes[0].effect, Effect::Refused);
        assert!(again.writes.is_empty());
        assert_eq!(again.state, out.state);
    }

    #[test]
    fn an_edit_on_a_current_base_or_without_one_is_written() {
        let before = edited_elsewhere();
        let ops = vec![
            // Based on the change it overwrites.
            op(
                json!({"op_id": "1", "kind": "update", "id": A, "base_seq": 2, "data": {"progress": 40}}),
            ),
            // Stale, but the field it sends has not changed since its base.
            op(
                json!({"op_id": "2", "kind": "update", "id": A, "base_seq": 1, "data": {"name": "Lycée"}}),
            ),
            // Stale, sending the value the field already has.
            op(
                json!({"op_id": "3", "kind": "update", "id": A, "base_seq": 1, "data": {"progress": 40}}),
            ),
            // No base: an older client; it overwrites.
            op(json!({"op_id": "4", "kind": "update", "id": A, "data": {"progress": 5}})),
        ];
        let out = apply(before.state, rows_of(&before), HashMap::new(), ops, 3);
        for o in &out.outcomes {
            assert_eq!(o.ack.status, AckStatus::Applied, "{:?}", o.ack);
        }
        assert_eq!(out.writes[0].progress, 5);
        assert_eq!(out.writes[0].name, "Lycée");
    }

    #[test]
    fn ops_of_one_batch_are_not_stale_against_each_other() {
        let out = after_edit(
            vec![
                op(
                    json!({"op_id": "1", "kind": "update", "id": A, "base_seq": 2, "data": {"progress": 40}}),
                ),
                op(
                    json!({"op_id": "2", "kind": "update", "id": A, "base_seq": 2, "data": {"progress": 45}}),
                ),
                // Stale against the change before the batch, whatever the batch did since.
                op(
                    json!({"op_id": "3", "kind": "update", "id": A, "base_seq": 1, "data": {"progress": 50}}),
                ),
                op(json!({"op_id": "4", "kind": "delete", "id": A, "base_seq": 2})),
            ],
            3,
        );
        let statuses: Vec<_> = out.outcomes.iter().map(|o| o.ack.status).collect();
        assert_eq!(
            statuses,
            [
                AckStatus::Applied,
                AckStatus::Applied,
                AckStatus::Conflict,
                AckStatus::Applied
            ]
        );
        assert_eq!(
            out.outcomes[2].ack.fields.clone().unwrap_or_default()["progress"].current,
            json!(45)
        );
        assert_eq!(out.state.live_count, 0);
    }

    #[test]
    fn a_stale_delete_is_refused_with_the_project_and_a_current_one_applies() {
        let out = after_edit(
            vec![op(
                json!({"op_id": "x", "kind": "delete", "id": A, "base_seq": 1}),
            )],
            3,
        );
        let ack = &out.outcomes[0].ack;
        assert_eq!(
            (ack.status, ack.reason.as_deref()),
            (AckStatus::Conflict, Some("stale"))
        );
        assert_eq!(
            ack.project.as_ref().map(|p| p["progress"].clone()),
            Some(json!(30))
        );
        assert!(out.writes.is_empty());
        let out = after_edit(
            vec![op(
                json!({"op_id": "y", "kind": "delete", "id": A, "base_seq": 2}),
            )],
            3,
        );
        assert_eq!(out.outcomes[0].ack.status, AckStatus::Applied);
        assert_eq!(out.state.live_count, 0);
    }

    #[test]
    fn a_row_from_before_field_seqs_counts_every_field_as_changed_at_its_seq() {
        let mut legacy = rows_of(&edited_elsewhere());
        if let Some(row) = legacy.get_mut(A) {
            row.field_seqs = Default::default();
        }
        let state = edited_elsewhere().state;
        let out = apply(
            state,
            legacy,
            HashMap::new(),
            vec![op(
                json!({"op_id": "a", "kind": "update", "id": A, "base_seq": 1,
                "data": {"city": "Rabat"}}),
            )],
            3,
        );
        // Fès → Rabat on a row changed at seq 2 whose city's own history is unknown.
        assert_eq!(out.outcomes[0].ack.reason.as_deref(), Some("stale"));
    }

    #[test]
    fn history_lists_what_each_applied_change_did() {
        let before = edited_elsewhere();
        let out = apply(
            before.state,
            rows_of(&before),
            HashMap::new(),
            vec![
                // Stale progress: only the city is applied and listed.
                op(
                    json!({"op_id": "1", "kind": "update", "id": A, "base_seq": 1,
                    "data": {"progress": 15, "city": "Rabat"}}),
                ),
                // The value already there: no entry.
                op(json!({"op_id": "2", "kind": "update", "id": A, "data": {"city": "Rabat"}})),
                op(json!({"op_id": "3", "kind": "delete", "id": A})),
            ],
            3,
        );
        let kinds: Vec<_> = out.history.iter().map(|e| (e.seq, e.kind)).collect();
        assert_eq!(kinds, [(3, OpKind::Update), (5, OpKind::Delete)]);
        assert_eq!(
            Value::Object(out.history[0].fields.clone()),
            json!({"city": {"from": "Fès", "to": "Rabat"}})
        );
        assert!(out.history[1].fields.is_empty());
        let by_b = &edited_elsewhere().history;
        assert_eq!(by_b.len(), 1);
        assert_eq!(by_b[0].fields["progress"], json!({"from": 0, "to": 30}));
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
