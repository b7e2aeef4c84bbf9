//! Conflicts under realistic clients (issue 16): three devices of one account edit the
//! same projects with offline periods, lost acks, retries and reconnects, every `update`
//! and `delete` carrying the `base_seq` a real client would send. Seeded, and every id
//! comes from the seed, so a run replays exactly: each assertion names its seed and step.
//!
//! # The client model
//!
//! Each device keeps
//! - a *copy*: the server's rows as it last learnt them (from a pull, or from its own
//!   acks), each with its seq and all its fields, and its cursor;
//! - an *outbox* of ops in the order the user made them. The user edits what the copy
//!   shows with the outbox applied on top. An `update`/`delete` carries as `base_seq` the
//!   row's seq in the copy when the op is made. An edit of a row whose create has no ack
//!   yet has no base; it gets the create's ack seq (see re-basing). If it travels in the
//!   create's own batch it is sent with 0: the row did not exist before the batch, and
//!   the server compares with the row as it was before the batch;
//! - at most one batch *in flight*: a push whose response was lost. The server applied it
//!   but the device does not know that, so its next push re-sends that same batch (same op ids,
//!   same order), and the re-send must get the same acks back.
//!
//! Random steps: make an edit (a create; an update of 1 to 3 of name, city, progress,
//! budget_centimes, notes; a delete), push a prefix of the outbox (1 time in 4 the
//! response is lost), pull (in small pages), reconnect (from the own cursor, from 0 or
//! from a cursor the server never issued, then push), go offline for a while (the
//! device only edits until it reconnects).
//!
//! When a push response arrives, the device updates its copy as docs/SYNC.md says. If
//! `from` equals its cursor (it had seen everything before the batch), it writes its acks
//! into its copy and moves its cursor to `cursor`; the test checks that copy against the
//! server. Otherwise it pulls, and it always pulls after a re-send, because its copy may
//! already hold the batch. Either way the copy then covers the device's own acks, so an
//! op made afterwards has a base at or above them.
//!
//! # Re-basing pending ops on the device's own acks
//!
//! Ops made *before* an ack arrived still hold an older base. The server cannot tell the
//! sender's own earlier op from another device's, so a later op on the same row and
//! field would be reported stale against the device's own change. The rule: when an ack
//! says the device's op on row R wrote the fields W at seq S (`applied`: every field it
//! sent, and every field for a create; `stale` with a `seq`: the fields it sent minus the
//! reported ones), each pending op on R gets the base max(base, S) for its fields in W.
//! Its other fields keep their base, so a pending op with fields on both sides is split
//! in two. It was never sent, so the new half takes a new op id.
//!
//! This is sound. At S, a field in W holds the value the device wrote itself, and the user
//! saw that value (the outbox on the copy) when making the later op, which came after
//! it, so nothing at or below S on that field is unseen, and the server still compares
//! changes after S. A field outside W may have been changed by another device between
//! the old base and S, which the device has not seen, so it keeps its base.
//!
//! A delete covers the whole row. Re-basing it would need the device to know that nobody
//! else touched R between the base and S, which it cannot know. So a delete never waits
//! behind an unacked op of its own device on the same row. Deleting a row drops the unsent
//! ops on it from the outbox, and drops the delete too when one of them is the row's
//! create, because the row never reached the server. A row with an op in flight cannot
//! be deleted until that op's ack is in.
//!
//! Conflicts are resolved as docs/SYNC.md describes. Half the time a stale update is
//! kept ("keep mine": the reported fields again, on the copy's current seq); otherwise the
//! current value stays. Half the time a refused delete is confirmed (a delete on the
//! current seq).
//!
//! # The oracle and what is asserted
//!
//! Every push goes through the test, so the oracle knows every change. For each row it
//! keeps each field's value and the seq of its last change (a write of the value already
//! there is no change), plus every change with its device. It is built from the acks
//! (`applied` with its `seq`; `stale` with a `seq`: the fields not reported were written).
//! For every ack:
//! - the seqs follow each other from the push's `from`, and a re-sent op answers its
//!   first ack byte for byte;
//! - every field the server wrote had its previous change at or below the op's base (or
//!   earlier in the same batch), unless it already held that value: the server
//!   overwrites nothing the writer had not seen;
//! - `fields` of a stale ack names exactly the fields sent that another device changed
//!   after the base (before the batch) and that now hold another value. It is compared
//!   for equality with the set the oracle computes, and `current`/`yours` are the
//!   oracle's value and the op's. A stale report caused only by the device's own
//!   earlier op fails as a client-model bug;
//! - a delete is refused iff the row changed after its base (by another device), and
//!   then the ack carries the row as the oracle has it;
//! - every pulled row is the oracle's current row, every tombstone one an applied
//!   delete made, and after each complete pull the copy is exactly the live set with
//!   `count` and `checksum` matching it.
//!
//! At the end every device flushes its outbox and pulls. Each holds exactly the server's
//! live set, with equal count and checksum. The server's rows (REST list) equal the oracle,
//! and equal all applied acks replayed in seq order, each field taking its last written
//! value (no acked op lost). A row is deleted iff an applied delete removed it (no
//! phantom delete). Every project's history (`/api/projects/{id}/history`) lists exactly
//! the changes the oracle derived, with the fields each one changed, so the "written"
//! fields above are what the server really wrote, and which device wrote them.

use std::collections::{BTreeMap, BTreeSet};

use btp_api::project::FIELDS;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::support::{checksum, Backend, Server, User};

both!(three_devices_see_every_value_they_overwrite);

const DEVICES: usize = 3;
const STEPS: usize = 2_000;
const SEEDS: [u64; 2] = [16, 20_261_207];
/// Largest batch a device pushes.
const MAX_BATCH: usize = 6;

/// The fields the devices edit (the dates are left alone: their order is validated on
/// the merged row, which would turn some edits into rejections).
const EDITED: [&str; 5] = ["name", "city", "progress", "budget_centimes", "notes"];

type Values = BTreeMap<String, Value>;

/// A new row's fields before its create's data (docs/SYNC.md, push).
fn defaults() -> Values {
    [
        ("name", json!("")),
        ("client", json!("")),
        ("city", json!("")),
        ("budget_centimes", json!(0)),
        ("status", json!("planned")),
        ("start_date", Value::Null),
        ("end_date", Value::Null),
        ("progress", json!(0)),
        ("notes", json!("")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The editable fields of a project as the server sent it.
fn values_of(project: &Value) -> Values {
    FIELDS
        .iter()
        .map(|f| (f.to_string(), project[*f].clone()))
        .collect()
}

fn label(device: usize) -> String {
    format!("Device {device}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone)]
struct Op {
    op_id: String,
    kind: Kind,
    id: String,
    data: Values,
    /// The row's seq in the device's copy when the op was made; `None`: made on a row
    /// whose create the device has no ack for yet.
    base: Option<i64>,
}

impl Op {
    fn base_sent(&self) -> i64 {
        self.base.unwrap_or(0)
    }

    fn json(&self) -> Value {
        let kind = match self.kind {
            Kind::Create => "create",
            Kind::Update => "update",
            Kind::Delete => "delete",
        };
        let mut op = json!({"op_id": self.op_id, "kind": kind, "id": self.id});
        if self.kind != Kind::Delete {
            op["data"] = json!(self.data);
        }
        if self.kind != Kind::Create {
            op["base_seq"] = json!(self.base_sent());
        }
        op
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    seq: i64,
    values: Values,
}

struct Device {
    session: String,
    copy: BTreeMap<String, Row>,
    cursor: Value,
    outbox: Vec<Op>,
    /// The first `in_flight` ops of the outbox were sent in a push whose response was lost.
    in_flight: usize,
    offline_until: Option<usize>,
    tombstones_seen: BTreeSet<String>,
    last_count: i64,
    last_checksum: String,
}

impl Device {
    /// The rows the user sees: the copy, plus creates and minus deletes still in the outbox.
    fn view(&self) -> BTreeSet<String> {
        let mut ids: BTreeSet<String> = self.copy.keys().cloned().collect();
        for op in &self.outbox {
            match op.kind {
                Kind::Create => {
                    ids.insert(op.id.clone());
                }
                Kind::Delete => {
                    ids.remove(&op.id);
                }
                Kind::Update => {}
            }
        }
        ids
    }

    fn in_flight_ids(&self) -> BTreeSet<String> {
        self.outbox[..self.in_flight]
            .iter()
            .map(|op| op.id.clone())
            .collect()
    }
}

/// One change of a row (one seq), as the oracle derived it from an ack.
#[derive(Debug, Clone)]
struct Change {
    seq: i64,
    device: usize,
    step: usize,
    op_id: String,
    kind: &'static str,
    /// Field → `{"from", "to"}` for the fields whose value changed (as history shows it).
    fields: Map<String, Value>,
}

#[derive(Debug, Clone)]
struct TrueRow {
    seq: i64,
    deleted: bool,
    values: Values,
    /// The seq of each field's last change of value.
    changed_at: BTreeMap<String, i64>,
    changes: Vec<Change>,
}

#[derive(Default)]
struct Truth {
    seq: i64,
    rows: BTreeMap<String, TrueRow>,
    /// The first ack of every op id, with its device and op.
    acks: BTreeMap<String, (usize, Op, Value)>,
    /// Project id → op id of the applied delete that removed it.
    deleted_by: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Stats {
    pushes: usize,
    lost: usize,
    resent: usize,
    fast_forwards: usize,
    applied: usize,
    partial: usize,
    refused_fields: usize,
    stale_deletes: usize,
    deleted_conflicts: usize,
    rebased: usize,
    split: usize,
    keep_mine: usize,
    confirmed_deletes: usize,
    offline: usize,
    resets: usize,
}

impl Truth {
    fn live(&self) -> BTreeMap<String, Row> {
        self.rows
            .iter()
            .filter(|(_, r)| !r.deleted)
            .map(|(id, r)| {
                (
                    id.clone(),
                    Row {
                        seq: r.seq,
                        values: r.values.clone(),
                    },
                )
            })
            .collect()
    }

    /// Check a push's response against the oracle and fold it in.
    fn check_batch(
        &mut self,
        device: usize,
        step: usize,
        batch: &[Op],
        resp: &Value,
        at: &str,
        stats: &mut Stats,
    ) {
        assert_eq!(
            resp["from"],
            json!(self.seq),
            "{at}: a push's `from` is the seq before it: {resp}"
        );
        let acks = resp["acks"]
            .as_array()
            .unwrap_or_else(|| panic!("{at}: no acks: {resp}"));
        assert_eq!(acks.len(), batch.len(), "{at}: one ack per op: {resp}");
        let from = self.seq;
        // Each row as it was before the batch: what an op's base is compared with.
        let mut before: BTreeMap<String, Option<TrueRow>> = BTreeMap::new();
        for (op, ack) in batch.iter().zip(acks) {
            let at = format!(
                "{at}, device {device}, op {} {:?} of {} base_seq {} data {}",
                op.op_id,
                op.kind,
                op.id,
                op.base_sent(),
                json!(op.data)
            );
            assert_eq!(ack["op_id"], json!(op.op_id), "{at}: acks in op order");
            if let Some((_, _, first)) = self.acks.get(&op.op_id) {
                assert_eq!(ack, first, "{at}: a re-sent op must answer its first ack");
                continue;
            }
            let original = before
                .entry(op.id.clone())
                .or_insert_with(|| self.rows.get(&op.id).cloned())
                .clone();
            self.check_op(device, step, op, ack, original.as_ref(), from, &at, stats);
            self.acks
                .insert(op.op_id.clone(), (device, op.clone(), ack.clone()));
        }
        assert_eq!(
            resp["cursor"],
            json!(self.seq),
            "{at}: a push's `cursor` is the seq after it: {resp}"
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn check_op(
        &mut self,
        device: usize,
        step: usize,
        op: &Op,
        ack: &Value,
        original: Option<&TrueRow>,
        from: i64,
        at: &str,
        stats: &mut Stats,
    ) {
        let next = self.seq + 1;
        let mut rest = ack.clone();
        if let Some(obj) = rest.as_object_mut() {
            if ack["status"] != "applied" {
                assert!(
                    ack["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{at}: a refusal explains itself: {ack}"
                );
            }
            obj.remove("message");
        }
        let applied = json!({"op_id": op.op_id, "status": "applied", "seq": next});
        let change = |kind: &'static str, fields: Map<String, Value>| Change {
            seq: next,
            device,
            step,
            op_id: op.op_id.clone(),
            kind,
            fields,
        };
        match op.kind {
            Kind::Create => {
                assert!(
                    !self.rows.contains_key(&op.id),
                    "{at}: the devices only create new ids"
                );
                assert_eq!(rest, applied, "{at}: a create of a new id applies: {ack}");
                let mut values = defaults();
                values.extend(op.data.clone());
                let fields = values
                    .iter()
                    .map(|(f, v)| (f.clone(), json!({"from": null, "to": v})))
                    .collect();
                self.rows.insert(
                    op.id.clone(),
                    TrueRow {
                        seq: next,
                        deleted: false,
                        changed_at: FIELDS.iter().map(|f| (f.to_string(), next)).collect(),
                        values,
                        changes: vec![change("create", fields)],
                    },
                );
                self.seq = next;
                stats.applied += 1;
            }
            Kind::Update => {
                let row = self
                    .rows
                    .get(&op.id)
                    .unwrap_or_else(|| panic!("{at}: an update of a row the server never had"));
                if row.deleted {
                    assert_eq!(
                        rest,
                        json!({"op_id": op.op_id, "status": "conflict", "reason": "deleted"}),
                        "{at}: an update of a deleted row is a `deleted` conflict: {ack}"
                    );
                    stats.deleted_conflicts += 1;
                    return;
                }
                let base = op.base_sent();
                // What the server says it did not write.
                let reported = match ack["status"].as_str() {
                    Some("applied") => Map::new(),
                    Some("conflict") => {
                        assert_eq!(ack["reason"], "stale", "{at}: {ack}");
                        ack["fields"]
                            .as_object()
                            .cloned()
                            .unwrap_or_else(|| panic!("{at}: a stale update names fields: {ack}"))
                    }
                    _ => panic!("{at}: unexpected ack {ack}"),
                };
                for (f, stale) in &reported {
                    assert!(
                        op.data.contains_key(f),
                        "{at}: a conflict on {f}, a field the op did not send: {ack}"
                    );
                    assert_eq!(
                        stale["current"], row.values[f],
                        "{at}: `current` of {f} is not the server's value: {ack}"
                    );
                    assert_eq!(
                        stale["yours"], op.data[f],
                        "{at}: `yours` of {f} is not the op's value: {ack}"
                    );
                }
                // Every field the server wrote: its previous change was seen by the writer.
                for (f, yours) in &op.data {
                    let previous = row.changed_at[f];
                    assert!(
                        reported.contains_key(f)
                            || previous <= base
                            || previous > from
                            || &row.values[f] == yours,
                        "{at}: the server wrote {f} = {yours} over {}, changed at seq {previous} \
                         after the op's base {base} by {:?}: {ack}",
                        row.values[f],
                        row.changes.iter().rfind(|c| c.seq == previous)
                    );
                }
                // The fields changed concurrently: sent, changed by another device after the
                // base (before this batch), and now holding another value than the op's.
                let mut expected = Map::new();
                for (f, yours) in &op.data {
                    let Some(original) = original else {
                        continue; // created in this batch: nothing before it
                    };
                    let current = &row.values[f];
                    let by_other = original
                        .changes
                        .iter()
                        .any(|c| c.seq > base && c.device != device && c.fields.contains_key(f));
                    let after_base = original.changed_at[f] > base;
                    assert!(
                        !after_base || by_other || current == yours,
                        "{at}: client-model bug: {f} last changed at seq {} after the base {base} \
                         only by this device ({:?}); the op should have been re-based",
                        original.changed_at[f],
                        original
                            .changes
                            .iter()
                            .filter(|c| c.seq > base)
                            .collect::<Vec<_>>()
                    );
                    if by_other && current != yours {
                        expected.insert(f.clone(), json!({"current": current, "yours": yours}));
                    }
                }
                assert_eq!(
                    Value::Object(reported.clone()),
                    Value::Object(expected),
                    "{at}: a conflict names exactly the fields changed concurrently: {ack}"
                );
                let written: Values = op
                    .data
                    .iter()
                    .filter(|(f, _)| !reported.contains_key(*f))
                    .map(|(f, v)| (f.clone(), v.clone()))
                    .collect();
                let want = if reported.is_empty() {
                    applied
                } else if written.is_empty() {
                    json!({"op_id": op.op_id, "status": "conflict", "reason": "stale",
                           "fields": reported})
                } else {
                    json!({"op_id": op.op_id, "status": "conflict", "reason": "stale",
                           "fields": reported, "seq": next})
                };
                assert_eq!(rest, want, "{at}: {ack}");
                if written.is_empty() {
                    stats.refused_fields += 1;
                    return;
                }
                if reported.is_empty() {
                    stats.applied += 1;
                } else {
                    stats.partial += 1;
                }
                let mut fields = Map::new();
                let row = self.rows.get_mut(&op.id).expect("checked above");
                for (f, v) in written {
                    if row.values[&f] != v {
                        fields.insert(f.clone(), json!({"from": row.values[&f], "to": v}));
                        row.changed_at.insert(f.clone(), next);
                        row.values.insert(f, v);
                    }
                }
                row.seq = next;
                row.changes.push(change("update", fields));
                self.seq = next;
            }
            Kind::Delete => {
                let row = self
                    .rows
                    .get_mut(&op.id)
                    .unwrap_or_else(|| panic!("{at}: a delete of a row the server never had"));
                if row.deleted {
                    assert_eq!(
                        rest,
                        json!({"op_id": op.op_id, "status": "applied", "seq": row.seq}),
                        "{at}: a delete of a tombstone applies without a change: {ack}"
                    );
                    stats.applied += 1;
                    return;
                }
                let base = op.base_sent();
                let changed_since = original.is_some_and(|o| o.seq > base);
                if changed_since {
                    let since: Vec<&Change> = original
                        .map(|o| o.changes.iter().filter(|c| c.seq > base).collect())
                        .unwrap_or_default();
                    assert!(
                        since.iter().any(|c| c.device != device),
                        "{at}: client-model bug: the row changed after the delete's base only \
                         by this device: {since:?}"
                    );
                    let project = &ack["project"];
                    assert_eq!(
                        (
                            &ack["status"],
                            &ack["reason"],
                            ack.get("seq"),
                            &project["id"],
                            &project["seq"],
                            &project["deleted_at"],
                        ),
                        (
                            &json!("conflict"),
                            &json!("stale"),
                            None,
                            &json!(op.id),
                            &json!(row.seq),
                            &Value::Null,
                        ),
                        "{at}: a delete of a row changed since its base ({since:?}) is refused \
                         with the row: {ack}"
                    );
                    assert_eq!(
                        values_of(project),
                        row.values,
                        "{at}: a refused delete carries the current row: {ack}"
                    );
                    stats.stale_deletes += 1;
                } else {
                    assert_eq!(
                        rest, applied,
                        "{at}: a delete of a row unchanged since its base applies: {ack}"
                    );
                    row.deleted = true;
                    row.seq = next;
                    row.changes.push(change("delete", Map::new()));
                    self.deleted_by.insert(op.id.clone(), op.op_id.clone());
                    self.seq = next;
                    stats.applied += 1;
                }
            }
        }
    }

    /// Every applied write replayed in seq order, each field taking its last written value.
    fn replay(&self) -> BTreeMap<String, Values> {
        let mut writes: Vec<(i64, &Op, &Value)> = self
            .acks
            .values()
            .filter_map(|(_, op, ack)| ack["seq"].as_i64().map(|seq| (seq, op, ack)))
            .collect();
        // Equal seqs: only a delete of a tombstone shares the seq of the delete that made it.
        writes.sort_by_key(|(seq, ..)| *seq);
        let mut rows: BTreeMap<String, Values> = BTreeMap::new();
        for (_, op, ack) in writes {
            match op.kind {
                Kind::Create => {
                    let mut values = defaults();
                    values.extend(op.data.clone());
                    rows.insert(op.id.clone(), values);
                }
                Kind::Update => {
                    let row = rows.get_mut(&op.id).expect("an update after its create");
                    for (f, v) in &op.data {
                        if ack["fields"].get(f).is_none() {
                            row.insert(f.clone(), v.clone());
                        }
                    }
                }
                Kind::Delete => {
                    rows.remove(&op.id);
                }
            }
        }
        rows
    }
}

struct World<'a> {
    s: &'a Server,
    u: &'a User,
    seed: u64,
    step: usize,
    rng: StdRng,
    devices: Vec<Device>,
    truth: Truth,
    stats: Stats,
    ops_made: u64,
    /// The final flush: no lost responses, no conflict resolutions.
    flushing: bool,
}

fn new_op_id(ops_made: &mut u64) -> String {
    *ops_made += 1;
    format!("op-{ops_made}")
}

impl World<'_> {
    fn at(&self) -> String {
        format!("seed {} step {}", self.seed, self.step)
    }

    /// The user makes one edit on device `d`.
    fn edit(&mut self, d: usize) {
        let step = self.step;
        let view: Vec<String> = self.devices[d].view().into_iter().collect();
        let roll = self.rng.random_range(0..100);
        let create_below = match view.len() {
            0..4 => 60,
            4..16 => 20,
            _ => 5,
        };
        if view.is_empty() || roll < create_below {
            let id = uuid::Builder::from_random_bytes(self.rng.random())
                .into_uuid()
                .to_string();
            let mut data = self.random_fields(step);
            if !data.contains_key("name") {
                data.insert("name".into(), json!(format!("Chantier {step}")));
            }
            let op = Op {
                op_id: new_op_id(&mut self.ops_made),
                kind: Kind::Create,
                id,
                data,
                base: None,
            };
            self.devices[d].outbox.push(op);
            return;
        }
        if roll >= 85 {
            let in_flight = self.devices[d].in_flight_ids();
            let candidates: Vec<&String> =
                view.iter().filter(|id| !in_flight.contains(*id)).collect();
            if !candidates.is_empty() {
                let id = candidates[self.rng.random_range(0..candidates.len())].clone();
                self.queue_delete(d, &id);
                return;
            }
        }
        let id = view[self.rng.random_range(0..view.len())].clone();
        let data = self.random_fields(step);
        let dev = &mut self.devices[d];
        let op = Op {
            op_id: new_op_id(&mut self.ops_made),
            kind: Kind::Update,
            base: dev.copy.get(&id).map(|r| r.seq),
            id,
            data,
        };
        dev.outbox.push(op);
    }

    /// 1 to 3 of the edited fields with random values, often from a small set so that
    /// devices also write values that are already there.
    fn random_fields(&mut self, step: usize) -> Values {
        let rng = &mut self.rng;
        let mut fields = EDITED.to_vec();
        let k = rng.random_range(1..=3);
        for i in 0..k {
            let j = rng.random_range(i..fields.len());
            fields.swap(i, j);
        }
        fields.truncate(k);
        fields
            .into_iter()
            .map(|f| {
                let fresh = rng.random_range(0..2) == 0;
                let pick = |rng: &mut StdRng, from: &[Value]| {
                    from[rng.random_range(0..from.len())].clone()
                };
                let value = match f {
                    "name" if fresh => json!(format!("Chantier {step}")),
                    "name" => pick(
                        rng,
                        &[
                            json!("Villa Agadir"),
                            json!("École Fès"),
                            json!("Lycée Oujda"),
                        ],
                    ),
                    "city" => pick(
                        rng,
                        &[
                            json!(""),
                            json!("Fès"),
                            json!("Rabat"),
                            json!("Agadir"),
                            json!("Oujda"),
                        ],
                    ),
                    "progress" if fresh => json!(rng.random_range(0..=100)),
                    "progress" => pick(rng, &[json!(0), json!(30), json!(100)]),
                    "budget_centimes" if fresh => json!(rng.random_range(0..=5_000_000_000i64)),
                    "budget_centimes" => pick(rng, &[json!(0), json!(150_000_000)]),
                    _ if fresh => json!(format!("note {step}")),
                    _ => pick(rng, &[json!(""), json!("dalle coulée"), json!("murs")]),
                };
                (f.to_string(), value)
            })
            .collect()
    }

    /// The user deletes `id` on device `d`: the outbox's unsent ops on it go (a delete
    /// never waits behind its own device's op of the row), and so does the delete when
    /// the row's create never left the device.
    fn queue_delete(&mut self, d: usize, id: &str) {
        let at = self.at();
        let dev = &mut self.devices[d];
        assert!(
            !dev.in_flight_ids().contains(id),
            "{at}: client-model bug: a delete behind an op in flight"
        );
        let never_sent = dev
            .outbox
            .iter()
            .any(|op| op.id == id && op.kind == Kind::Create);
        dev.outbox.retain(|op| op.id != id);
        if never_sent {
            return;
        }
        let base = dev
            .copy
            .get(id)
            .map(|r| r.seq)
            .unwrap_or_else(|| panic!("{at}: a row the device can delete is in its copy"));
        dev.outbox.push(Op {
            op_id: new_op_id(&mut self.ops_made),
            kind: Kind::Delete,
            id: id.to_string(),
            data: Values::new(),
            base: Some(base),
        });
    }

    /// Device `d` pulls until caught up, from `cursor` if given.
    async fn pull(&mut self, d: usize, cursor: Option<Value>, limit: Option<u32>) {
        let at = format!("{}, device {d} pulling", self.at());
        let World {
            s,
            u,
            devices,
            truth,
            stats,
            ..
        } = self;
        let dev = &mut devices[d];
        if let Some(c) = cursor {
            dev.cursor = c;
        }
        for _ in 0..10_000 {
            let resp = s.pull(u, &dev.cursor, limit).await;
            if resp["reset"] == true {
                dev.copy.clear();
                stats.resets += 1;
            }
            for change in resp["changes"].as_array().expect("changes") {
                let id = change["id"].as_str().expect("id").to_string();
                let seq = change["seq"].as_i64().expect("seq");
                let row = truth
                    .rows
                    .get(&id)
                    .unwrap_or_else(|| panic!("{at}: pulled {id}, which nobody created"));
                match change["kind"].as_str() {
                    Some("upsert") => {
                        let values = values_of(&change["project"]);
                        assert_eq!(
                            (row.deleted, row.seq, &row.values),
                            (false, seq, &values),
                            "{at}: a pulled row is the server's current row: {change}"
                        );
                        dev.copy.insert(id, Row { seq, values });
                    }
                    Some("delete") => {
                        assert!(
                            row.deleted && row.seq == seq && truth.deleted_by.contains_key(&id),
                            "{at}: phantom delete: a tombstone no applied delete made: {change}"
                        );
                        dev.copy.remove(&id);
                        dev.tombstones_seen.insert(id);
                    }
                    other => panic!("{at}: unknown change kind {other:?}"),
                }
            }
            dev.cursor = resp["cursor"].clone();
            if resp["has_more"] != true {
                dev.last_count = resp["count"].as_i64().expect("count");
                dev.last_checksum = resp["checksum"].as_str().expect("checksum").to_string();
                assert_eq!(
                    dev.copy,
                    truth.live(),
                    "{at}: after a complete pull the copy is the live set"
                );
                assert_eq!(dev.last_count, dev.copy.len() as i64, "{at}: count");
                assert_eq!(
                    checksum(dev.copy.iter().map(|(id, r)| (id, &r.seq))),
                    dev.last_checksum,
                    "{at}: checksum"
                );
                return;
            }
        }
        panic!("{at}: pull never caught up");
    }

    /// Device `d` pushes: the batch in flight again, or a prefix of its outbox.
    async fn push(&mut self, d: usize) {
        let at = format!("{}, device {d} pushing", self.at());
        let dev = &self.devices[d];
        if dev.outbox.is_empty() {
            return;
        }
        let resend = dev.in_flight > 0;
        let most = dev.outbox.len().min(MAX_BATCH);
        let n = if resend {
            dev.in_flight
        } else if self.flushing {
            most
        } else {
            self.rng.random_range(1..=most)
        };
        let batch = dev.outbox[..n].to_vec();
        for (i, op) in batch.iter().enumerate() {
            assert!(
                op.base.is_some()
                    || op.kind == Kind::Create
                    || batch[..i]
                        .iter()
                        .any(|o| o.id == op.id && o.kind == Kind::Create),
                "{at}: client-model bug: {} has no base and its create is not in the batch",
                op.op_id
            );
        }
        let body = json!({
            "client_id": format!("device-{d}"),
            "session_id": dev.session,
            "client_label": label(d),
            "ops": batch.iter().map(Op::json).collect::<Vec<_>>(),
        });
        let (status, resp) = self
            .s
            .call(
                Method::POST,
                "/api/sync/push",
                Some(&self.u.token),
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "{at}: {resp}");
        self.stats.pushes += 1;
        if resend {
            self.stats.resent += 1;
        }
        self.truth
            .check_batch(d, self.step, &batch, &resp, &at, &mut self.stats);
        if !self.flushing && self.rng.random_range(0..4) == 0 {
            // The response is lost: the server applied the batch, the device does not know.
            self.devices[d].in_flight = n;
            self.stats.lost += 1;
            return;
        }
        let (must_pull, stale) = self.receive(d, &batch, &resp, resend, &at);
        if must_pull {
            self.pull(d, None, None).await;
        }
        if !self.flushing {
            self.resolve(d, stale);
        }
    }

    /// Device `d` reads the response to `batch`: fast-forwards its copy when it may,
    /// re-bases its pending ops on its acks. Returns whether it must pull, and its stale
    /// acks.
    fn receive(
        &mut self,
        d: usize,
        batch: &[Op],
        resp: &Value,
        resend: bool,
        at: &str,
    ) -> (bool, Vec<(Op, Value)>) {
        let World {
            devices,
            truth,
            stats,
            ops_made,
            ..
        } = self;
        let dev = &mut devices[d];
        dev.outbox.drain(..batch.len());
        dev.in_flight = 0;
        // It had seen everything before the batch: the batch is all that lies between.
        let fast_forward = !resend && resp["from"] == dev.cursor;
        let mut touched = BTreeSet::new();
        let mut stale = Vec::new();
        for (op, ack) in batch.iter().zip(resp["acks"].as_array().expect("acks")) {
            let at = format!("{at}, op {} on {}", op.op_id, op.id);
            let seq = ack["seq"].as_i64();
            let reported = ack["fields"].as_object().cloned().unwrap_or_default();
            if fast_forward {
                touched.insert(op.id.clone());
                fast_forward_one(dev, op, ack, &at);
            }
            if ack["reason"] == "stale" {
                stale.push((op.clone(), ack.clone()));
            }
            if let (Some(seq), Kind::Create | Kind::Update) = (seq, op.kind) {
                let written: BTreeSet<String> = match op.kind {
                    Kind::Create => FIELDS.iter().map(|f| f.to_string()).collect(),
                    _ => op
                        .data
                        .keys()
                        .filter(|f| !reported.contains_key(*f))
                        .cloned()
                        .collect(),
                };
                rebase(dev, &op.id, seq, &written, stats, ops_made);
            }
        }
        if fast_forward {
            dev.cursor = resp["cursor"].clone();
            stats.fast_forwards += 1;
            let live = truth.live();
            for id in touched {
                assert_eq!(
                    dev.copy.get(&id),
                    live.get(&id),
                    "{at}: a copy moved on by its own acks (from == cursor) is the server's row"
                );
            }
        }
        (!fast_forward, stale)
    }

    /// The user answers the stale acks: half the time keeps their edit ("keep mine": the
    /// same fields on the current seq) or confirms their delete.
    fn resolve(&mut self, d: usize, stale: Vec<(Op, Value)>) {
        for (op, ack) in stale {
            if self.rng.random_range(0..2) == 0 || !self.devices[d].view().contains(&op.id) {
                continue;
            }
            let dev = &mut self.devices[d];
            let Some(base) = dev.copy.get(&op.id).map(|r| r.seq) else {
                continue;
            };
            match op.kind {
                Kind::Update => {
                    let data: Values = ack["fields"]
                        .as_object()
                        .expect("fields")
                        .iter()
                        .map(|(f, st)| (f.clone(), st["yours"].clone()))
                        .collect();
                    dev.outbox.push(Op {
                        op_id: new_op_id(&mut self.ops_made),
                        kind: Kind::Update,
                        id: op.id.clone(),
                        data,
                        base: Some(base),
                    });
                    self.stats.keep_mine += 1;
                }
                Kind::Delete => {
                    self.queue_delete(d, &op.id);
                    self.stats.confirmed_deletes += 1;
                }
                Kind::Create => unreachable!("a create is never stale"),
            }
        }
    }

    /// Device `d` comes back: pulls from its cursor, from 0 or from a cursor the server
    /// never issued (the last two answer a reset snapshot), then pushes.
    async fn reconnect(&mut self, d: usize) {
        let own = self.devices[d].cursor.clone();
        let cursor = match self.rng.random_range(0..10) {
            0..6 => own,
            6..9 => json!(0),
            _ => json!(self.truth.seq + self.rng.random_range(1..50)),
        };
        let limit = self.limit();
        self.pull(d, Some(cursor), limit).await;
        self.push(d).await;
    }

    fn limit(&mut self) -> Option<u32> {
        match self.rng.random_range(0..3) {
            0 => None,
            _ => Some(self.rng.random_range(1..6)),
        }
    }
}

/// Write one ack into a copy that had everything before the batch.
fn fast_forward_one(dev: &mut Device, op: &Op, ack: &Value, at: &str) {
    let seq = ack["seq"].as_i64();
    match (op.kind, ack["status"].as_str(), ack["reason"].as_str()) {
        (Kind::Create, Some("applied"), _) => {
            let mut values = defaults();
            values.extend(op.data.clone());
            let seq = seq.expect("an applied op has a seq");
            dev.copy.insert(op.id.clone(), Row { seq, values });
        }
        (Kind::Update, _, Some("deleted")) => {
            assert!(
                !dev.copy.contains_key(&op.id),
                "{at}: a `deleted` conflict on a row the up-to-date copy still has: {ack}"
            );
        }
        (Kind::Update, Some("applied" | "conflict"), _) => {
            let row = dev
                .copy
                .get_mut(&op.id)
                .unwrap_or_else(|| panic!("{at}: the up-to-date copy lacks the row: {ack}"));
            for (f, v) in &op.data {
                match ack["fields"].get(f) {
                    Some(stale) => assert_eq!(
                        stale["current"], row.values[f],
                        "{at}: `current` of {f} is not what the up-to-date copy holds: {ack}"
                    ),
                    None => {
                        row.values.insert(f.clone(), v.clone());
                    }
                }
            }
            if let Some(seq) = seq {
                row.seq = seq;
            }
        }
        (Kind::Delete, Some("applied"), _) => {
            dev.copy.remove(&op.id);
        }
        (Kind::Delete, Some("conflict"), Some("stale")) => {
            let row = dev
                .copy
                .get(&op.id)
                .unwrap_or_else(|| panic!("{at}: the up-to-date copy lacks the row: {ack}"));
            assert_eq!(
                (json!(row.seq), &row.values),
                (ack["project"]["seq"].clone(), &values_of(&ack["project"])),
                "{at}: a refused delete carries the row the up-to-date copy holds: {ack}"
            );
        }
        _ => panic!("{at}: unexpected ack {ack}"),
    }
}

/// The re-base rule (module docs): the device's op on `id` wrote `written` at `seq`;
/// every pending op on `id` rests on `seq` for those fields, split off when it also has
/// others.
fn rebase(
    dev: &mut Device,
    id: &str,
    seq: i64,
    written: &BTreeSet<String>,
    stats: &mut Stats,
    ops_made: &mut u64,
) {
    assert_eq!(dev.in_flight, 0, "re-basing only touches unsent ops");
    let pending = std::mem::take(&mut dev.outbox);
    for op in pending {
        if op.id != id || op.kind != Kind::Update {
            dev.outbox.push(op);
            continue;
        }
        let (mine, rest): (Values, Values) = op
            .data
            .clone()
            .into_iter()
            .partition(|(f, _)| written.contains(f));
        let base = Some(op.base.map_or(seq, |b| b.max(seq)));
        if mine.is_empty() || base == op.base {
            dev.outbox.push(op);
        } else if rest.is_empty() {
            stats.rebased += 1;
            dev.outbox.push(Op { base, ..op });
        } else {
            stats.split += 1;
            dev.outbox.push(Op {
                data: rest,
                ..op.clone()
            });
            dev.outbox.push(Op {
                op_id: new_op_id(ops_made),
                data: mine,
                base,
                ..op
            });
        }
    }
}

async fn three_devices_see_every_value_they_overwrite(backend: Backend) {
    for seed in SEEDS {
        let started = std::time::Instant::now();
        let Some(stats) = run(backend, seed).await else {
            return;
        };
        eprintln!(
            "conflicts {backend:?} seed {seed}: {:.1} s, {stats:?}",
            started.elapsed().as_secs_f64()
        );
    }
}

async fn run(backend: Backend, seed: u64) -> Option<Stats> {
    let s = Server::start(backend).await?;
    let u = s.register("conflicts").await;
    let mut w = World {
        s: &s,
        u: &u,
        seed,
        step: 0,
        rng: StdRng::seed_from_u64(seed),
        devices: (0..DEVICES)
            .map(|d| Device {
                session: format!("device-{d}"),
                copy: BTreeMap::new(),
                cursor: json!(0),
                outbox: Vec::new(),
                in_flight: 0,
                offline_until: None,
                tombstones_seen: BTreeSet::new(),
                last_count: 0,
                last_checksum: String::new(),
            })
            .collect(),
        truth: Truth::default(),
        stats: Stats::default(),
        ops_made: 0,
        flushing: false,
    };

    for step in 0..STEPS {
        w.step = step;
        let d = w.rng.random_range(0..DEVICES);
        if let Some(until) = w.devices[d].offline_until {
            if step >= until {
                w.devices[d].offline_until = None;
                w.reconnect(d).await;
            } else {
                w.edit(d);
            }
            continue;
        }
        match w.rng.random_range(0..100) {
            0..45 => w.edit(d),
            45..70 => w.push(d).await,
            70..85 => {
                let limit = w.limit();
                w.pull(d, None, limit).await;
            }
            85..93 => {
                w.devices[d].offline_until = Some(step + w.rng.random_range(20..80));
                w.stats.offline += 1;
            }
            _ => w.reconnect(d).await,
        }
    }

    // Every device comes back and flushes its outbox (nothing lost any more).
    w.flushing = true;
    for round in 0..20 {
        w.step = STEPS + round;
        if w.devices.iter().all(|dev| dev.outbox.is_empty()) {
            break;
        }
        for d in 0..DEVICES {
            w.devices[d].offline_until = None;
            w.pull(d, None, None).await;
            while !w.devices[d].outbox.is_empty() {
                w.push(d).await;
            }
        }
    }
    let at = format!("seed {seed} at the end");
    assert!(
        w.devices.iter().all(|dev| dev.outbox.is_empty()),
        "{at}: the outboxes never emptied"
    );
    for d in 0..DEVICES {
        w.pull(d, None, Some(3)).await;
    }

    // The server's rows, straight from the REST list.
    let (status, list) = s
        .call(Method::GET, "/api/projects", Some(&u.token), None)
        .await;
    assert_eq!(status, 200, "{at}: {list}");
    let server: BTreeMap<String, Row> = list["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id").to_string(),
                Row {
                    seq: p["seq"].as_i64().expect("seq"),
                    values: values_of(p),
                },
            )
        })
        .collect();
    let live = w.truth.live();
    assert_eq!(server, live, "{at}: the server's rows are not the oracle's");
    let server_values: BTreeMap<String, Values> = server
        .iter()
        .map(|(id, r)| (id.clone(), r.values.clone()))
        .collect();
    assert_eq!(
        server_values,
        w.truth.replay(),
        "{at}: an acked op was lost: the server is not the applied acks replayed in seq order"
    );
    let server_sum = checksum(server.iter().map(|(id, r)| (id, &r.seq)));
    for (d, dev) in w.devices.iter().enumerate() {
        assert_eq!(dev.copy, server, "{at}: device {d} diverged");
        assert_eq!(
            (dev.last_count, &dev.last_checksum),
            (server.len() as i64, &server_sum),
            "{at}: device {d}: count and checksum"
        );
        for id in &dev.tombstones_seen {
            assert!(
                w.truth.deleted_by.contains_key(id),
                "{at}: device {d} was sent a delete of {id} that no applied delete made"
            );
        }
    }
    for (id, row) in &w.truth.rows {
        assert_eq!(
            row.deleted,
            w.truth.deleted_by.contains_key(id),
            "{at}: {id}: deleted iff an applied delete removed it"
        );
    }

    // History: every change the oracle derived from the acks, and nothing else.
    for (id, row) in &w.truth.rows {
        let (status, body) = s
            .call(
                Method::GET,
                &format!("/api/projects/{id}/history?limit=200"),
                Some(&u.token),
                None,
            )
            .await;
        assert_eq!(status, 200, "{at}: {body}");
        let got: Vec<Value> = body["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                json!({"seq": e["seq"], "kind": e["kind"], "device": e["device"],
                       "fields": e["fields"]})
            })
            .collect();
        let changes: Vec<&Change> = row
            .changes
            .iter()
            .rev()
            .filter(|c| c.kind != "update" || !c.fields.is_empty())
            .collect();
        assert!(
            changes.len() < 200,
            "{at}: {id}: history longer than a page"
        );
        let want: Vec<Value> = changes
            .iter()
            .map(|c| {
                json!({"seq": c.seq, "kind": c.kind, "device": label(c.device),
                       "fields": c.fields})
            })
            .collect();
        let steps: Vec<(i64, usize, &str)> = changes
            .iter()
            .map(|c| (c.seq, c.step, c.op_id.as_str()))
            .collect();
        assert_eq!(
            got, want,
            "{at}: the history of {id} is not what the acks say was written \
             (seq, step, op: {steps:?})"
        );
    }

    // The seeds exercise every path this test is about.
    let st = &w.stats;
    for (what, n) in [
        ("partly applied stale updates", st.partial),
        ("wholly refused stale updates", st.refused_fields),
        ("refused stale deletes", st.stale_deletes),
        ("`deleted` conflicts", st.deleted_conflicts),
        ("lost responses", st.lost),
        ("re-sent batches", st.resent),
        ("fast-forwards", st.fast_forwards),
        ("re-based ops", st.rebased),
        ("reset snapshots", st.resets),
        ("offline periods", st.offline),
    ] {
        assert!(n > 0, "{at}: no {what}: {st:?}");
    }
    Some(w.stats)
}
