//! What a pull returns: the cursor rules, as pure functions over the user's
//! `sync_state` and the rows the store fetched for the chosen plan.
//!
//! - cursor `0` → snapshot of live rows (never a tombstone), with `reset: true`: the
//!   first page of any snapshot tells the client to replace its copy;
//! - cursor `c` with `purged_seq <= c <= seq` → every row whose seq is above `c`,
//!   tombstones included, in seq order;
//! - cursor above `seq` (unknown) or below `purged_seq` (a delete it needs was purged) →
//!   `reset: true` and a snapshot;
//! - a snapshot longer than one page continues with a string cursor
//!   `"snapshot:<upto>:<after>"`: live rows with `after < seq <= upto`, where `upto` is the
//!   user's seq when the snapshot began. Rows changed meanwhile move above `upto` and
//!   arrive with the change feed that follows (the last page's cursor is `upto`, with
//!   `has_more` while the user's seq is beyond it), so a snapshot never skips a change
//!   and never carries a tombstone.

use serde::Serialize;
use serde_json::Value;

use super::{Change, SyncState};
use crate::project::Project;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    Seq(i64),
    Snapshot { upto: i64, after: i64 },
}

impl Cursor {
    /// A cursor as the client sent it; `None` if it is neither a non-negative integer nor
    /// a snapshot continuation this server could have issued.
    pub fn parse(value: &Value) -> Option<Cursor> {
        match value {
            Value::Number(n) => n.as_i64().filter(|c| *c >= 0).map(Cursor::Seq),
            Value::String(s) => {
                let rest = s.strip_prefix("snapshot:")?;
                let (upto, after) = rest.split_once(':')?;
                let upto: i64 = upto.parse().ok()?;
                let after: i64 = after.parse().ok()?;
                (0 <= after && after <= upto).then_some(Cursor::Snapshot { upto, after })
            }
            _ => None,
        }
    }

    pub fn to_json(self) -> Value {
        match self {
            Cursor::Seq(c) => Value::from(c),
            Cursor::Snapshot { upto, after } => Value::from(format!("snapshot:{upto}:{after}")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Live rows with `after < seq <= upto`, in seq order.
    Snapshot { reset: bool, after: i64, upto: i64 },
    /// All rows with `seq > after`, in seq order.
    Changes { after: i64 },
}

pub fn plan(cursor: Cursor, state: &SyncState) -> Plan {
    let fresh = |reset| Plan::Snapshot {
        reset,
        after: 0,
        upto: state.seq,
    };
    match cursor {
        Cursor::Seq(0) => fresh(true),
        Cursor::Seq(c) if c > state.seq || c < state.purged_seq => fresh(true),
        Cursor::Seq(c) => Plan::Changes { after: c },
        Cursor::Snapshot { upto, .. } if upto > state.seq || upto < state.purged_seq => fresh(true),
        Cursor::Snapshot { upto, after } => Plan::Snapshot {
            reset: false,
            after,
            upto,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PullResponse {
    pub cursor: Value,
    pub reset: bool,
    pub changes: Vec<Change>,
    pub has_more: bool,
    pub count: i64,
    pub checksum: String,
}

/// Build the response from the rows the store fetched for `plan`: at most `limit + 1` of
/// them (the extra one only says whether there is more).
pub fn respond(
    plan: Plan,
    mut rows: Vec<Project>,
    limit: usize,
    state: &SyncState,
) -> PullResponse {
    let more_rows = rows.len() > limit;
    rows.truncate(limit);
    let last = rows.last().map(|r| r.seq);
    let (cursor, reset, has_more) = match plan {
        Plan::Snapshot { reset, upto, .. } => match (more_rows, last) {
            (true, Some(after)) => (Cursor::Snapshot { upto, after }, reset, true),
            _ => (Cursor::Seq(upto), reset, state.seq > upto),
        },
        Plan::Changes { .. } => match (more_rows, last) {
            (true, Some(after)) => (Cursor::Seq(after), false, true),
            _ => (Cursor::Seq(state.seq), false, false),
        },
    };
    PullResponse {
        cursor: cursor.to_json(),
        reset,
        changes: rows.into_iter().map(Change::of).collect(),
        has_more,
        count: state.live_count,
        checksum: state.checksum.to_hex(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::checksum::Checksum;
    use serde_json::json;

    fn state(seq: i64, purged_seq: i64) -> SyncState {
        SyncState {
            seq,
            purged_seq,
            live_count: 0,
            checksum: Checksum::default(),
        }
    }

    #[test]
    fn cursor_rules() {
        let s = state(100, 40);
        let snap = |reset| Plan::Snapshot {
            reset,
            after: 0,
            upto: 100,
        };
        assert_eq!(plan(Cursor::Seq(0), &s), snap(true));
        assert_eq!(plan(Cursor::Seq(101), &s), snap(true));
        assert_eq!(plan(Cursor::Seq(39), &s), snap(true));
        assert_eq!(plan(Cursor::Seq(40), &s), Plan::Changes { after: 40 });
        assert_eq!(plan(Cursor::Seq(100), &s), Plan::Changes { after: 100 });
        assert_eq!(
            plan(
                Cursor::Snapshot {
                    upto: 90,
                    after: 10
                },
                &s
            ),
            Plan::Snapshot {
                reset: false,
                after: 10,
                upto: 90
            }
        );
        assert_eq!(
            plan(
                Cursor::Snapshot {
                    upto: 120,
                    after: 10
                },
                &s
            ),
            snap(true)
        );
    }

    #[test]
    fn cursor_parsing_accepts_only_what_the_server_issues() {
        assert_eq!(Cursor::parse(&json!(5)), Some(Cursor::Seq(5)));
        assert_eq!(
            Cursor::parse(&json!("snapshot:9:3")),
            Some(Cursor::Snapshot { upto: 9, after: 3 })
        );
        for bad in [
            json!(-1),
            json!(1.5),
            json!("7"),
            json!("snapshot:3:9"),
            json!(null),
        ] {
            assert_eq!(Cursor::parse(&bad), None, "{bad}");
        }
        let c = Cursor::Snapshot { upto: 9, after: 3 };
        assert_eq!(Cursor::parse(&c.to_json()), Some(c));
    }

    #[test]
    fn last_snapshot_page_points_at_the_change_feed() {
        let s = state(12, 0);
        let r = respond(
            Plan::Snapshot {
                reset: false,
                after: 0,
                upto: 10,
            },
            vec![],
            5,
            &s,
        );
        assert_eq!(r.cursor, json!(10));
        assert!(
            r.has_more,
            "writes after the snapshot began are still to fetch"
        );
    }
}
