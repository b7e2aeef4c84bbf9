//! What only SQLite needs: the database file and its directory created on first start,
//! WAL journaling (readers never block the writer, so pulls run while pushes commit),
//! and a busy timeout for the rare writer from another process (`btp` tools, a second
//! worker misconfigured onto SQLite).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::AnyConnection;
use sqlx::{ConnectOptions, Connection};

use super::{Result, StoreError};

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
