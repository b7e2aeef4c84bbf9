//! Storage: every SQL statement the API runs, behind one [`Store`] that speaks SQLite or
//! PostgreSQL.
//!
//! Both engines run the same statements through sqlx's `Any` driver (numbered `$n`
//! placeholders, `ON CONFLICT`, `RETURNING` and partial indexes mean the same on both);
//! what differs lives in `sqlite.rs` (file creation, WAL, one writer at a time, a push
//! batch as multi-row statements, project lists as JSON arrays) and `postgres.rs` (a
//! push batch in two statements, LISTEN/NOTIFY). The sync engine's decisions are pure
//! (`crate::sync`); this module only loads their inputs and writes their outputs inside
//! one transaction.
//!
//! Commit order: every write transaction first locks the user's `sync_state` row
//! (`UPDATE … RETURNING`), so a user's writers run one at a time and seq order is
//! commit order. Reads of more than one statement run in one snapshot (a deferred read
//! transaction on SQLite's WAL, `REPEATABLE READ` on PostgreSQL), so a pull's state row
//! and rows always agree.

/// The columns `project_of` decodes, in its order.
macro_rules! project_cols {
    () => {
        "id, seq, name, client, city, budget_centimes, status, start_date, end_date, progress, \
         notes, created_at, updated_at, deleted_at"
    };
}

/// 1 while a `Caller`'s token is live, else 0 — with the user id as `$1`, the token
/// hash as `$2` and the time as `$3` (an integer: sqlx's `Any` decodes no SQLite bool).
macro_rules! token_live {
    () => {
        "CASE WHEN EXISTS (SELECT 1 FROM auth_tokens \
         WHERE token_hash = $2 AND user_id = $1 AND expires_at > $3) THEN 1 ELSE 0 END"
    };
}

mod accounts;
mod postgres;
mod sqlite;

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row, Transaction};

use crate::bus::{Bus, ChangeBatch};
use crate::project::{format_millis, parse_date, FieldSeqs, Project, Status};
use crate::sync::apply::{self, Applied, Entry};
use crate::sync::checksum::Checksum;
use crate::sync::pull::{self, Cursor, Plan, PullResponse};
use crate::sync::{Ack, Change, OpInput, SyncState};

pub use accounts::{Bearer, Caller, Refused, Slot, UserRecord};
pub use postgres::spawn_listener;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url (expected sqlite:// or postgres://): {0}")]
    UnsupportedUrl(String),
    #[error("cannot create the database directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("user {0} has no sync state")]
    NoSyncState(String),
    /// The bearer token was revoked or expired before the statement that needed it.
    #[error("the token is revoked or expired")]
    Revoked,
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Who sends a push: its session (the origin of its broadcast) and the device label its
/// history entries carry.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub session: Option<&'a str>,
    pub device: &'a str,
}

/// What a retention purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub users: u64,
    pub tombstones: u64,
}

/// PostgreSQL channel of the change bus.
const CHANNEL: &str = "btp_changes";
/// PostgreSQL channel of token revocations (logout, logout-all).
const REVOCATIONS: &str = "btp_revocations";

pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    /// SQLite allows one writer: taking turns here is cheaper than retrying on
    /// SQLITE_BUSY, and it keeps bus publication in commit order.
    write_lock: tokio::sync::Mutex<()>,
    bus: Bus,
}

impl Store {
    /// Open the pool (creating a SQLite file and its directory if missing). Does not
    /// migrate; see [`Store::migrate`].
    pub async fn connect(url: &str, max_connections: u32, bus: Bus) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let mut options = AnyPoolOptions::new().max_connections(max_connections.max(1));
        let url = match dialect {
            Dialect::Sqlite => {
                options = options.after_connect(|conn, _| Box::pin(sqlite::configure(conn)));
                sqlite::prepare(url).await?
            }
            Dialect::Postgres => url.to_string(),
        };
        let pool = options.connect(&url).await?;
        Ok(Store {
            pool,
            dialect,
            url,
            write_lock: tokio::sync::Mutex::new(()),
            bus,
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Dialect::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn pool_size(&self) -> u32 {
        self.pool.size()
    }

    pub fn pool_idle(&self) -> usize {
        self.pool.num_idle()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    async fn begin_read(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin().await?,
            Dialect::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.dialect {
            Dialect::Sqlite => Some(self.write_lock.lock().await),
            Dialect::Postgres => None,
        }
    }

    // ----- projects and sync -----

    pub async fn sync_state(&self, user_id: &str) -> Result<SyncState> {
        read_state(&self.pool, user_id).await
    }

    /// One live project of the user.
    pub async fn live_project(&self, user_id: &str, id: &str) -> Result<Option<Project>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            project_cols!(),
            " FROM projects WHERE user_id = $1 AND id = $2 AND deleted_at IS NULL"
        ))
        .bind(user_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| project_of(&r)).transpose()
    }

    /// Every live project of the user, with the state they are consistent with.
    pub async fn live_projects(&self, user_id: &str) -> Result<(Vec<Project>, SyncState)> {
        let mut tx = self.begin_read().await?;
        let state = read_state(&mut *tx, user_id).await?;
        let projects = select_projects(
            self.dialect,
            &mut tx,
            concat!(
                "SELECT ",
                project_cols!(),
                " FROM projects WHERE user_id = $1 AND deleted_at IS NULL ORDER BY seq"
            ),
            user_id,
            &[],
        )
        .await?;
        tx.commit().await?;
        Ok((projects, state))
    }

    /// Apply one push batch in one transaction (see `sync::apply`), then publish it.
    pub async fn push(
        &self,
        caller: &Caller,
        ops: Vec<OpInput>,
        now: i64,
        writer: Writer<'_>,
    ) -> Result<Applied> {
        let origin_session = writer.session;
        let user_id = caller.user_id.as_str();
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let lock = concat!(
            "UPDATE sync_state SET seq = seq WHERE user_id = $1 \
             RETURNING seq, purged_seq, live_count, checksum, ",
            token_live!()
        );
        let state = caller_state(&mut tx, lock, caller, now).await?;

        let mut ids = Vec::new();
        let mut op_ids = Vec::new();
        let mut seen = HashSet::new();
        for input in &ops {
            match input {
                OpInput::Valid(op) => {
                    if seen.insert(("id", op.id.as_str())) {
                        ids.push(op.id.clone());
                    }
                    if seen.insert(("op", op.op_id.as_str())) {
                        op_ids.push(op.op_id.clone());
                    }
                }
                OpInput::Invalid { ack, store: true } => {
                    if seen.insert(("op", ack.op_id.as_str())) {
                        op_ids.push(ack.op_id.clone());
                    }
                }
                OpInput::Invalid { .. } => {}
            }
        }
        let (rows, acks) = match self.dialect {
            Dialect::Sqlite => sqlite::load(&mut tx, user_id, &ids, &op_ids).await?,
            Dialect::Postgres => postgres::load(&mut tx, user_id, &ids, &op_ids).await?,
        };

        let applied = apply::apply(state, rows, acks, ops, now);

        let changes: Vec<Value> = applied
            .writes
            .iter()
            .map(|r| serde_json::to_value(Change::of(r.clone())).unwrap_or(Value::Null))
            .collect();
        match self.dialect {
            Dialect::Sqlite => sqlite::write(&mut tx, user_id, &applied, writer, now).await?,
            Dialect::Postgres => {
                postgres::write(&mut tx, user_id, &applied, &changes, writer, now).await?
            }
        }
        tx.commit().await?;

        if !applied.writes.is_empty() && self.dialect == Dialect::Sqlite {
            self.bus.publish(ChangeBatch {
                user_id: user_id.to_string(),
                origin_session: origin_session.map(str::to_string),
                from: applied.from,
                to: applied.to(),
                changes,
            });
        }
        Ok(applied)
    }

    /// Answer a pull (see `sync::pull`), reading state and rows in one snapshot.
    pub async fn pull(
        &self,
        caller: &Caller,
        cursor: Cursor,
        limit: usize,
        now: i64,
    ) -> Result<PullResponse> {
        let user_id = caller.user_id.as_str();
        let mut tx = self.begin_read().await?;
        let read = concat!(
            "SELECT seq, purged_seq, live_count, checksum, ",
            token_live!(),
            " FROM sync_state WHERE user_id = $1"
        );
        let state = caller_state(&mut tx, read, caller, now).await?;
        let plan = pull::plan(cursor, &state);
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows = match plan {
            Plan::Snapshot { after, upto, .. } => {
                let sql = concat!(
                    "SELECT ",
                    project_cols!(),
                    " FROM projects WHERE user_id = $1 AND deleted_at IS NULL \
                     AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4"
                );
                select_projects(self.dialect, &mut tx, sql, user_id, &[after, upto, fetch]).await?
            }
            Plan::Changes { after } => {
                let sql = concat!(
                    "SELECT ",
                    project_cols!(),
                    " FROM projects WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                );
                select_projects(self.dialect, &mut tx, sql, user_id, &[after, fetch]).await?
            }
        };
        tx.commit().await?;
        Ok(pull::respond(plan, rows, limit, &state))
    }

    /// The exact changes of one committed batch, from the change log (PostgreSQL bus).
    pub async fn logged_changes(&self, user_id: &str, from: i64, to: i64) -> Result<Vec<Value>> {
        let rows = sqlx::query(
            "SELECT change FROM change_log WHERE user_id = $1 AND seq > $2 AND seq <= $3 \
             ORDER BY seq",
        )
        .bind(user_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get(0)?;
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// The newest `limit` history entries of the user's project `id` (live or deleted),
    /// newest first; `None` when the user has no such project.
    pub async fn history(&self, user_id: &str, id: &str, limit: i64) -> Result<Option<Vec<Value>>> {
        let mut tx = self.begin_read().await?;
        let known = sqlx::query("SELECT 1 FROM projects WHERE user_id = $1 AND id = $2")
            .bind(user_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            tx.commit().await?;
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT seq, at, kind, device, session_id, fields FROM project_history \
             WHERE user_id = $1 AND project_id = $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(user_id)
        .bind(id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|r| {
                let fields: String = r.try_get(5)?;
                let fields: Value = serde_json::from_str(&fields)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok(serde_json::json!({
                    "seq": r.try_get::<i64, _>(0)?,
                    "at": format_millis(r.try_get(1)?),
                    "kind": r.try_get::<String, _>(2)?,
                    "device": r.try_get::<String, _>(3)?,
                    "session_id": r.try_get::<Option<String>, _>(4)?,
                    "fields": fields,
                }))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// Drop tombstones deleted before `cutoff` and move each affected user's purge
    /// horizon up to the highest purged seq, in one transaction per user (the
    /// `sync_state` lock keeps pushes and pulls consistent with it). Op acks, the
    /// change log and history entries older than `cutoff` go too.
    pub async fn purge_tombstones(&self, cutoff: i64) -> Result<Purged> {
        let horizons = sqlx::query(
            "SELECT user_id, MAX(seq) FROM projects \
             WHERE deleted_at IS NOT NULL AND deleted_at < $1 GROUP BY user_id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        let mut purged = Purged::default();
        for row in horizons {
            let user_id: String = row.try_get(0)?;
            let horizon: i64 = row.try_get(1)?;
            let _turn = self.write_turn().await;
            let mut tx = self.begin_write().await?;
            sqlx::query(
                "UPDATE sync_state SET purged_seq = $2 WHERE user_id = $1 AND purged_seq < $2",
            )
            .bind(&user_id)
            .bind(horizon)
            .execute(&mut *tx)
            .await?;
            let removed = sqlx::query(
                "DELETE FROM projects WHERE user_id = $1 AND deleted_at IS NOT NULL \
                 AND deleted_at < $2 AND seq <= $3",
            )
            .bind(&user_id)
            .bind(cutoff)
            .bind(horizon)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            purged.users += 1;
            purged.tombstones += removed;
        }
        let _turn = self.write_turn().await;
        for sql in [
            "DELETE FROM op_acks WHERE created_at < $1",
            "DELETE FROM change_log WHERE created_at < $1",
            "DELETE FROM project_history WHERE at < $1",
        ] {
            sqlx::query(sql).bind(cutoff).execute(&self.pool).await?;
        }
        Ok(purged)
    }
}

async fn read_state<'e, E>(executor: E, user_id: &str) -> Result<SyncState>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(
        "SELECT seq, purged_seq, live_count, checksum FROM sync_state WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(executor)
    .await?;
    match row {
        Some(row) => state_of(&row),
        None => Err(StoreError::NoSyncState(user_id.to_string())),
    }
}

/// Decode a `sync_state` row selected as `seq, purged_seq, live_count, checksum`.
fn state_of(row: &AnyRow) -> Result<SyncState> {
    let checksum: String = row.try_get(3)?;
    Ok(SyncState {
        seq: row.try_get(0)?,
        purged_seq: row.try_get(1)?,
        live_count: row.try_get(2)?,
        checksum: Checksum::from_hex(&checksum),
    })
}

/// The caller's sync state, read or locked by `sql` (selecting `seq, purged_seq,
/// live_count, checksum, token_live!()` for the user `$1`), or `Revoked` when the
/// caller's token is not live.
async fn caller_state(
    tx: &mut Transaction<'static, Any>,
    sql: &'static str,
    caller: &Caller,
    now: i64,
) -> Result<SyncState> {
    let row = sqlx::query(sql)
        .bind(&caller.user_id)
        .bind(&caller.token_hash)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NoSyncState(caller.user_id.clone()))?;
    if row.try_get::<i64, _>(4)? != 1 {
        return Err(StoreError::Revoked);
    }
    state_of(&row)
}

/// A history entry's fields as stored in `project_history.fields`.
fn fields_text(entry: &Entry) -> Result<String> {
    serde_json::to_string(&entry.fields).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An ack as stored in `op_acks.ack`.
fn ack_text(ack: &Ack) -> Result<String> {
    serde_json::to_string(ack).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn ack_of(text: &str) -> Result<Ack> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A project row in `project_cols!()` order, as the database stores it (and as
/// `sqlite::select_projects` receives it in JSON).
#[derive(Deserialize)]
struct StoredRow(
    String,
    i64,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    i64,
    String,
    i64,
    i64,
    Option<i64>,
);

impl StoredRow {
    fn into_project(self) -> Result<Project> {
        let StoredRow(
            id,
            seq,
            name,
            client,
            city,
            budget_centimes,
            status,
            start_date,
            end_date,
            progress,
            notes,
            created_at,
            updated_at,
            deleted_at,
        ) = self;
        let date = |text: Option<String>| {
            text.map(|t| parse_date(&t).ok_or_else(|| StoreError::Corrupt(format!("date {t:?}"))))
                .transpose()
        };
        Ok(Project {
            id,
            seq,
            name,
            client,
            city,
            budget_centimes,
            status: Status::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("status {status:?}")))?,
            start_date: date(start_date)?,
            end_date: date(end_date)?,
            progress,
            notes,
            created_at,
            updated_at,
            deleted_at,
            field_seqs: FieldSeqs::default(),
        })
    }
}

/// A row a push loads: `project_cols!()` then `field_seqs` (column 14).
fn written_project_of(row: &AnyRow) -> Result<Project> {
    let mut project = project_of(row)?;
    let text: String = row.try_get(14)?;
    project.field_seqs = FieldSeqs::from_json(&text).map_err(StoreError::Corrupt)?;
    Ok(project)
}

/// Decode a row selected with `project_cols!()`, by position (name lookups cost a hash
/// per column on every row).
fn project_of(row: &AnyRow) -> Result<Project> {
    StoredRow(
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
        row.try_get(7)?,
        row.try_get(8)?,
        row.try_get(9)?,
        row.try_get(10)?,
        row.try_get(11)?,
        row.try_get(12)?,
        row.try_get(13)?,
    )
    .into_project()
}

/// The project rows `sql` selects (`SELECT project_cols!() … ORDER BY seq`, binding the
/// user id, then `args`), in seq order.
async fn select_projects(
    dialect: Dialect,
    conn: &mut AnyConnection,
    sql: &'static str,
    user_id: &str,
    args: &[i64],
) -> Result<Vec<Project>> {
    match dialect {
        Dialect::Sqlite => sqlite::select_projects(conn, sql, user_id, args).await,
        Dialect::Postgres => {
            let mut q = sqlx::query(sql).bind(user_id);
            for arg in args {
                q = q.bind(*arg);
            }
            q.fetch_all(conn).await?.iter().map(project_of).collect()
        }
    }
}
