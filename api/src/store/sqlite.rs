//! What only SQLite needs: the database file and its directory created on first start,
//! WAL journaling (readers never block the writer, so pulls run while pushes commit),
//! a busy timeout for the rare writer from another process (`btp` tools, a second
//! worker misconfigured onto SQLite), a push batch as generated multi-row statements,
//! and lists of projects read as JSON arrays SQLite builds.
//!
//! Batch statements: one round trip costs nothing in process, so a batch is loaded and
//! written with one multi-row statement per table. They use anonymous `?` parameters:
//! SQLite resolves every named `$n` by a linear scan of the names seen so far, which is
//! quadratic in a 1,500-parameter statement (`strncmp` was a quarter of the push
//! profile). They stay prepared: preparing one costs more than running it.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Any, AnyConnection, AssertSqlSafe, Row, Transaction};
use sqlx::{ConnectOptions, Connection};

use super::{written_project_of, Result, StoreError, StoredRow, Writer};
use crate::project::Project;
use crate::sync::apply::Applied;
use crate::sync::Ack;

/// Rows per multi-row statement: well under SQLite's 32,766 bound parameters with 16
/// columns a row.
const CHUNK: usize = 200;

/// Create the directory and file if missing and switch the file to WAL (a persistent
/// property of the file, so pooled connections inherit it). Returns the URL to pool.
pub(super) async fn prepare(url: &str) -> Result<String> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
    }
    let conn = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await?;
    conn.close().await?;
    Ok(url.to_string())
}

/// Run on every new pooled connection.
pub(super) async fn configure(conn: &mut AnyConnection) -> std::result::Result<(), sqlx::Error> {
    let busy = Duration::from_secs(10).as_millis();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA busy_timeout = {busy}; PRAGMA foreign_keys = ON;"
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// The rows (tombstones included) and stored acks a batch's ids and op ids name.
pub(super) async fn load(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    ids: &[String],
    op_ids: &[String],
) -> Result<(HashMap<String, Project>, HashMap<String, Ack>)> {
    let mut rows = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK * 4) {
        let sql = format!(
            "SELECT {}, field_seqs FROM projects WHERE user_id = ? AND id IN ({})",
            project_cols!(),
            params(chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(user_id);
        for id in chunk {
            q = q.bind(id);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let p = written_project_of(&row)?;
            rows.insert(p.id.clone(), p);
        }
    }
    let mut acks = HashMap::new();
    for chunk in op_ids.chunks(CHUNK * 4) {
        let sql = format!(
            "SELECT op_id, ack FROM op_acks WHERE user_id = ? AND op_id IN ({})",
            params(chunk.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(user_id);
        for id in chunk {
            q = q.bind(id);
        }
        for row in q.fetch_all(&mut **tx).await? {
            let op_id: String = row.try_get(0)?;
            let text: String = row.try_get(1)?;
            acks.insert(op_id, super::ack_of(&text)?);
        }
    }
    Ok((rows, acks))
}

/// Write what `apply` decided: changed rows, their history, new acks, and the user's
/// state.
pub(super) async fn write(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    applied: &Applied,
    writer: Writer<'_>,
    now: i64,
) -> Result<()> {
    for chunk in applied.writes.chunks(CHUNK) {
        let rows = vec![format!("({})", params(16)); chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO projects (user_id, {}, field_seqs) VALUES {rows} \
             ON CONFLICT (user_id, id) DO UPDATE SET seq = excluded.seq, name = excluded.name, \
             client = excluded.client, city = excluded.city, \
             budget_centimes = excluded.budget_centimes, status = excluded.status, \
             start_date = excluded.start_date, end_date = excluded.end_date, \
             progress = excluded.progress, notes = excluded.notes, \
             updated_at = excluded.updated_at, deleted_at = excluded.deleted_at, \
             field_seqs = excluded.field_seqs",
            project_cols!(),
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for p in chunk {
            q = q
                .bind(user_id)
                .bind(&p.id)
                .bind(p.seq)
                .bind(&p.name)
                .bind(&p.client)
                .bind(&p.city)
                .bind(p.budget_centimes)
                .bind(p.status.as_str())
                .bind(p.start_date.map(|d| d.to_string()))
                .bind(p.end_date.map(|d| d.to_string()))
                .bind(p.progress)
                .bind(&p.notes)
                .bind(p.created_at)
                .bind(p.updated_at)
                .bind(p.deleted_at)
                .bind(p.field_seqs.to_json());
        }
        q.execute(&mut **tx).await?;
    }
    for chunk in applied.history.chunks(CHUNK) {
        let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO project_history \
             (user_id, seq, project_id, at, kind, device, session_id, fields) VALUES {rows}"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for entry in chunk {
            q = q
                .bind(user_id)
                .bind(entry.seq)
                .bind(&entry.project_id)
                .bind(now)
                .bind(entry.kind.as_str())
                .bind(writer.device)
                .bind(writer.session)
                .bind(super::fields_text(entry)?);
        }
        q.execute(&mut **tx).await?;
    }
    for chunk in applied.new_acks.chunks(CHUNK) {
        let rows = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!("INSERT INTO op_acks (user_id, op_id, ack, created_at) VALUES {rows}");
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for ack in chunk {
            q = q
                .bind(user_id)
                .bind(&ack.op_id)
                .bind(super::ack_text(ack)?)
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    if !applied.writes.is_empty() {
        sqlx::query(
            "UPDATE sync_state SET seq = $2, live_count = $3, checksum = $4 WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(applied.state.seq)
        .bind(applied.state.live_count)
        .bind(applied.state.checksum.to_hex())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The project rows `sql` selects (`SELECT project_cols!() … ORDER BY seq`, binding the
/// user id, then `args`), in seq order.
///
/// They come back as JSON arrays SQLite builds, not as rows: a 10,000-row snapshot spent
/// most of its time handing 140,000 values one by one through the driver (each copied
/// on the driver's worker thread, sent over a channel a row at a time, converted to
/// `Any`'s representation and copied again: 45–95 ms, bench/api/README.md). As JSON it
/// takes about 20 ms. One array per thousand seqs, so no value nears SQLite's 1 GB
/// limit whatever the page size (a user's seqs are unique). PostgreSQL sends rows faster
/// than it builds JSON, so it keeps rows.
pub(super) async fn select_projects(
    conn: &mut AnyConnection,
    sql: &str,
    user_id: &str,
    args: &[i64],
) -> Result<Vec<Project>> {
    let sql = format!(
        "SELECT json_group_array(json_array({})) FROM ({sql}) GROUP BY seq / 1000",
        project_cols!()
    );
    let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(user_id);
    for arg in args {
        q = q.bind(*arg);
    }
    let mut projects = Vec::new();
    for text in q.fetch_all(conn).await? {
        let rows: Vec<StoredRow> =
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        for row in rows {
            projects.push(row.into_project()?);
        }
    }
    // Aggregates keep their input's order in practice, but SQLite does not promise it.
    projects.sort_by_key(|p| p.seq);
    Ok(projects)
}

/// `?, ?, …` (`n` of them). Only placeholders are formatted into the SQL; every value
/// is bound.
fn params(n: usize) -> String {
    vec!["?"; n].join(", ")
}
