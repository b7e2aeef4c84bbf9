//! What only PostgreSQL needs: the cross-process change bus. A push transaction appends
//! its changes to `change_log` and sends `NOTIFY btp_changes` with a reference (user,
//! seq range, origin session); PostgreSQL delivers notifications at commit, in commit
//! order, to every listening process. Each process's listener reads the referenced
//! changes back and publishes them on its in-process [`Bus`](crate::bus::Bus).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgListener;
use sqlx::{Any, AssertSqlSafe, Transaction};
use tokio::task::JoinHandle;

use super::{placeholders, Result, Store, StoreError, CHANNEL, CHUNK};
use crate::bus::ChangeBatch;
use crate::sync::apply::Applied;

/// The NOTIFY payload: a reference, never the changes themselves (NOTIFY payloads are
/// limited to 8 kB; a 1,000-op batch is far larger).
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    u: String,
    f: i64,
    t: i64,
    o: Option<String>,
}

pub(super) async fn log_and_notify(
    tx: &mut Transaction<'static, Any>,
    user_id: &str,
    applied: &Applied,
    changes: &[Value],
    origin_session: Option<&str>,
    now: i64,
) -> Result<()> {
    let entries: Vec<(i64, String)> = applied
        .writes
        .iter()
        .zip(changes)
        .map(|(row, change)| (row.seq, change.to_string()))
        .collect();
    for chunk in entries.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO change_log (user_id, seq, change, created_at) VALUES {}",
            placeholders(super::Dialect::Postgres, 1, chunk.len(), 4)
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for (seq, change) in chunk {
            q = q.bind(user_id).bind(*seq).bind(change.as_str()).bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    let notice = Notice {
        u: user_id.to_string(),
        f: applied.from,
        t: applied.to(),
        o: origin_session.map(str::to_string),
    };
    let payload = serde_json::to_string(&notice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Start listening (before returning, so no batch committed after this call is
/// missed) and publish every notified batch on the store's bus. Does nothing for SQLite.
pub async fn spawn_listener(store: Arc<Store>) -> Result<Option<JoinHandle<()>>> {
    if store.dialect != super::Dialect::Postgres {
        return Ok(None);
    }
    let mut listener = PgListener::connect(&store.url).await?;
    listener.listen(CHANNEL).await?;
    Ok(Some(tokio::spawn(async move {
        loop {
            match listener.recv().await {
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
