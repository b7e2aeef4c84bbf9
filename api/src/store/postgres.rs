//! What only PostgreSQL needs: a push batch in few round trips, and the cross-process
//! change bus.
//!
//! Round trips: every statement is one, and a single writer waits for each in turn, so a
//! batch is BEGIN, the `sync_state` lock, one [`load`], one [`write`] and COMMIT. The
//! batch travels as JSON text parameters that the statements unpack
//! (`json_array_elements_text`, `json_to_recordset`): `Any` binds no arrays, and a
//! statement whose text does not depend on the batch size stays prepared on the
//! connection, where a generated 1,500-parameter statement was parsed and planned every
//! time (two round trips each). The lock stays a statement of its own: a statement reads
//! from the snapshot it started with, so rows read by the statement that waited for the
//! lock could predate the writer it waited for.
//!
//! Change bus: a push transaction appends its changes to `change_log` and sends
//! `NOTIFY btp_changes` with a reference (user, seq range, origin session); PostgreSQL
//! delivers notifications at commit, in commit order, to every listening process. Each
//! process's listener reads the referenced changes back and publishes them on its
//! in-process [`Bus`](crate::bus::Bus). Token revocations come on `btp_revocations`
//! and are published as they are.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{Any, Row, Transaction};
use tokio::task::JoinHandle;

use super::accounts::RevocationNotice;
use super::{
    ack_of, ack_text, written_project_of, Result, Store, StoreError, Writer, CHANNEL, REVOCATIONS,
};
use crate::bus::{ChangeBatch, Revocation};
use crate::project::Project;
use crate::sync::apply::Applied;
use crate::sync::Ack;

/// The NOTIFY payload: a reference, never the changes themselves (NOTIFY payloads are
/// limited to 8 kB; a 1,000-op batch is far larger).
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    u: String,
    f: i64,
    t: i64,
    o: Option<String>,
}

/// The rows (tombstones included) and stored acks a batch's ids and op ids name, in one
/// statement: project rows carry NULL in the last two columns, ack rows NULL in the
/// project columns. Each id is one primary-key lookup, fenced in a `LATERAL … OFFSET 0`
/// so the planner cannot turn the lookups into a scan of all the user's rows: it did,
/// with the plan it kept from when the table was small (a batch on a 10,000-row account
/// took 20 ms instead of 1).
pub(super) async fn load(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    ids: &[String],
    op_ids: &[String],
) -> Result<(HashMap<String, Project>, HashMap<String, Ack>)> {
    let found = sqlx::query(concat!(
        "SELECT p.*, NULL::text AS op_id, NULL::text AS ack \
         FROM json_array_elements_text($2::json) AS k (id) \
         CROSS JOIN LATERAL (SELECT ",
        project_cols!(),
        ", field_seqs FROM projects WHERE user_id = $1 AND id = k.id OFFSET 0) AS p \
         UNION ALL \
         SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL, NULL, NULL, a.op_id, a.ack \
         FROM json_array_elements_text($3::json) AS k (op_id) \
         CROSS JOIN LATERAL (SELECT op_id, ack FROM op_acks \
         WHERE user_id = $1 AND op_id = k.op_id OFFSET 0) AS a"
    ))
    .bind(user_id)
    .bind(json_text(ids)?)
    .bind(json_text(op_ids)?)
    .fetch_all(&mut **tx)
    .await?;
    let mut rows = HashMap::with_capacity(ids.len());
    let mut acks = HashMap::new();
    for row in found {
        match row.try_get::<Option<String>, _>(16)? {
            Some(text) => {
                acks.insert(row.try_get(15)?, ack_of(&text)?);
            }
            None => {
                let p = written_project_of(&row)?;
                rows.insert(p.id.clone(), p);
            }
        }
    }
    Ok((rows, acks))
}

/// A row of `write`'s `$2`, named as `json_to_recordset` unpacks it.
#[derive(Serialize)]
struct RowParam<'a> {
    id: &'a str,
    seq: i64,
    name: &'a str,
    client: &'a str,
    city: &'a str,
    budget_centimes: i64,
    status: &'static str,
    start_date: Option<String>,
    end_date: Option<String>,
    progress: i64,
    notes: &'a str,
    created_at: i64,
    updated_at: i64,
    deleted_at: Option<i64>,
    field_seqs: String,
}

#[derive(Serialize)]
struct AckParam<'a> {
    op_id: &'a str,
    ack: String,
}

#[derive(Serialize)]
struct EntryParam<'a> {
    seq: i64,
    project_id: &'a str,
    kind: &'static str,
    fields: String,
}

#[derive(Serialize)]
struct ChangeParam {
    seq: i64,
    change: String,
}

/// Write what `apply` decided in one statement: changed rows, their history, new acks,
/// the change log, the user's state, and the notification. The state moves, and the notification goes,
/// only when the batch changed something (`seq` only grows).
pub(super) async fn write(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    applied: &Applied,
    changes: &[Value],
    writer: Writer<'_>,
    now: i64,
) -> Result<()> {
    let origin_session = writer.session;
    if applied.writes.is_empty() && applied.new_acks.is_empty() {
        return Ok(());
    }
    let rows: Vec<RowParam> = applied
        .writes
        .iter()
        .map(|p| RowParam {
            id: &p.id,
            seq: p.seq,
            name: &p.name,
            client: &p.client,
            city: &p.city,
            budget_centimes: p.budget_centimes,
            status: p.status.as_str(),
            start_date: p.start_date.map(|d| d.to_string()),
            end_date: p.end_date.map(|d| d.to_string()),
            progress: p.progress,
            notes: &p.notes,
            created_at: p.created_at,
            updated_at: p.updated_at,
            deleted_at: p.deleted_at,
            field_seqs: p.field_seqs.to_json(),
        })
        .collect();
    let acks = applied
        .new_acks
        .iter()
        .map(|a| {
            Ok(AckParam {
                op_id: &a.op_id,
                ack: ack_text(a)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let logged: Vec<ChangeParam> = applied
        .writes
        .iter()
        .zip(changes)
        .map(|(row, change)| ChangeParam {
            seq: row.seq,
            change: change.to_string(),
        })
        .collect();
    let history: Vec<EntryParam> = applied
        .history
        .iter()
        .map(|e| {
            Ok(EntryParam {
                seq: e.seq,
                project_id: &e.project_id,
                kind: e.kind.as_str(),
                fields: super::fields_text(e)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let notice = Notice {
        u: user_id.to_string(),
        f: applied.from,
        t: applied.to(),
        o: origin_session.map(str::to_string),
    };
    sqlx::query(concat!(
        "WITH changed AS (INSERT INTO projects (user_id, ",
        project_cols!(),
        ", field_seqs) SELECT $1, ",
        project_cols!(),
        ", field_seqs FROM json_to_recordset($2::json) AS r (id text, seq bigint, name text, \
         client text, city text, budget_centimes bigint, status text, start_date text, \
         end_date text, progress bigint, notes text, created_at bigint, updated_at bigint, \
         deleted_at bigint, field_seqs text) \
         ON CONFLICT (user_id, id) DO UPDATE SET seq = excluded.seq, name = excluded.name, \
         client = excluded.client, city = excluded.city, \
         budget_centimes = excluded.budget_centimes, status = excluded.status, \
         start_date = excluded.start_date, end_date = excluded.end_date, \
         progress = excluded.progress, notes = excluded.notes, \
         updated_at = excluded.updated_at, deleted_at = excluded.deleted_at, \
         field_seqs = excluded.field_seqs), \
         acked AS (INSERT INTO op_acks (user_id, op_id, ack, created_at) \
         SELECT $1, op_id, ack, $4 FROM json_to_recordset($3::json) AS a (op_id text, ack text)), \
         logged AS (INSERT INTO change_log (user_id, seq, change, created_at) \
         SELECT $1, seq, change, $4 FROM json_to_recordset($5::json) AS c (seq bigint, change text)), \
         historied AS (INSERT INTO project_history \
         (user_id, seq, project_id, at, kind, device, session_id, fields) \
         SELECT $1, seq, project_id, $4, kind, $11, $12, fields \
         FROM json_to_recordset($13::json) AS h (seq bigint, project_id text, kind text, fields text)), \
         moved AS (UPDATE sync_state SET seq = $6, live_count = $7, checksum = $8 \
         WHERE user_id = $1 AND seq < $6 RETURNING seq) \
         SELECT pg_notify($9, $10) FROM moved"
    ))
    .bind(user_id)
    .bind(json_text(&rows)?)
    .bind(json_text(&acks)?)
    .bind(now)
    .bind(json_text(&logged)?)
    .bind(applied.state.seq)
    .bind(applied.state.live_count)
    .bind(applied.state.checksum.to_hex())
    .bind(CHANNEL)
    .bind(json_text(&notice)?)
    .bind(writer.device)
    .bind(writer.session)
    .bind(json_text(&history)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Start listening (before returning, so no batch committed after this call is
/// missed) and publish every notified batch on the store's bus. Does nothing for SQLite.
pub async fn spawn_listener(store: Arc<Store>) -> Result<Option<JoinHandle<()>>> {
    if store.dialect != super::Dialect::Postgres {
        return Ok(None);
    }
    let mut listener = PgListener::connect(&store.url).await?;
    listener.listen_all([CHANNEL, REVOCATIONS]).await?;
    Ok(Some(tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(n) if n.channel() == REVOCATIONS => relay_revocation(&store, n.payload()),
                Ok(n) => relay(&store, n.payload()).await,
                Err(e) => {
                    // PgListener reconnects on the next recv; batches notified meanwhile
                    // are missed here, and clients recover them by pulling (gap in `from`).
                    tracing::warn!(error = %e, "[BUS] LISTEN connection lost; reconnecting");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })))
}

fn relay_revocation(store: &Store, payload: &str) {
    match serde_json::from_str::<RevocationNotice>(payload) {
        Ok(notice) => store.bus.revoke(Revocation {
            user_id: notice.u,
            token_hash: notice.t,
        }),
        Err(e) => tracing::warn!(error = %e, "[BUS] ignoring malformed revocation"),
    }
}

async fn relay(store: &Store, payload: &str) {
    let notice: Notice = match serde_json::from_str(payload) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "[BUS] ignoring malformed notification");
            return;
        }
    };
    match store.logged_changes(&notice.u, notice.f, notice.t).await {
        Ok(changes) => store.bus.publish(ChangeBatch {
            user_id: notice.u,
            origin_session: notice.o,
            from: notice.f,
            to: notice.t,
            changes,
        }),
        Err(e) => tracing::error!(error = %e, user = %notice.u, "[BUS] cannot read batch"),
    }
}
