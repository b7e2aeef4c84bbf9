//! Accounts, bearer tokens and throttling counters: the statements behind `crate::auth`.
//!
//! Revocation is published where it is committed, as a change batch is: on PostgreSQL
//! the transaction that deletes tokens sends `NOTIFY btp_revocations` (delivered to every
//! worker at commit), on SQLite the one process publishes on its bus after the commit.
//! Either way each worker's realtime layer closes the sockets opened with those tokens.
//!
//! Throttling counts attempts per key in one row each, upserted inside one transaction
//! for every key an attempt is charged to: the upsert locks the row, so attempts that
//! arrive together are counted one after the other, and an attempt past any key's limit
//! rolls the whole charge back — it costs no key anything and gets no password check.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Dialect, Result, Store, StoreError, REVOCATIONS};
use crate::bus::Revocation;
use crate::sync::checksum::Checksum;

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub created_at: i64,
}

/// A live bearer token: whose it is, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    pub user: UserRecord,
    pub expires_at: i64,
}

/// Who reads or writes a user's data: the user, and the sha256 of the bearer token that
/// proved it. The statement that locks (push) or reads (pull) the user's sync state also
/// checks that the token is still live, so a revoked or expired token never gets one
/// more change applied or served, whatever socket or request it arrives on (see
/// `token_live!`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub token_hash: String,
}

/// One throttling counter an attempt is charged to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub key: String,
    /// Attempts allowed within one window.
    pub limit: u32,
    pub window_ms: i64,
}

/// An attempt that was not counted: `slots[index]` is at its limit until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub index: usize,
    pub until: i64,
}

/// The NOTIFY payload of a revocation.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RevocationNotice {
    pub u: String,
    /// One token's hash, or every token of the user when absent.
    pub t: Option<String>,
}

fn user_of(row: &AnyRow) -> Result<UserRecord> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Insert a user with an empty sync state. `false` if the email is taken.
    pub async fn insert_user(&self, user: &UserRecord) -> Result<bool> {
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (email) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO sync_state (user_id, seq, purged_seq, live_count, checksum) \
             VALUES ($1, 0, 0, 0, $2)",
        )
        .bind(&user.id)
        .bind(Checksum::default().to_hex())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query(
            "SELECT id, email, name, password_hash, created_at FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_of(&r)).transpose()
    }

    pub async fn insert_token(
        &self,
        token_hash: &str,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO auth_tokens (token_hash, user_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The user a token belongs to and its expiry, if it exists and has not expired.
    pub async fn bearer(&self, token_hash: &str, now: i64) -> Result<Option<Bearer>> {
        let row = sqlx::query(
            "SELECT u.id, u.email, u.name, u.password_hash, u.created_at, t.expires_at \
             FROM auth_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_hash = $1 AND t.expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Bearer {
                user: user_of(&r)?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Revoke one token of `user_id` (`Some`) or all of them (`None`), and tell every
    /// worker. Returns how many tokens were deleted.
    pub async fn revoke(&self, user_id: &str, token_hash: Option<&str>) -> Result<u64> {
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        let deleted = match token_hash {
            Some(hash) => {
                sqlx::query("DELETE FROM auth_tokens WHERE token_hash = $1 AND user_id = $2")
                    .bind(hash)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
            }
            None => {
                sqlx::query("DELETE FROM auth_tokens WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?
            }
        }
        .rows_affected();
        let revocation = Revocation {
            user_id: user_id.to_string(),
            token_hash: token_hash.map(str::to_string),
        };
        if self.dialect == Dialect::Postgres {
            let notice = RevocationNotice {
                u: revocation.user_id.clone(),
                t: revocation.token_hash.clone(),
            };
            let payload =
                serde_json::to_string(&notice).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(REVOCATIONS)
                .bind(payload)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if self.dialect == Dialect::Sqlite {
            self.bus.revoke(revocation);
        }
        Ok(deleted)
    }

    /// Charge one attempt to every slot, or to none: `Err(Refused)` names the first
    /// slot (in key order) that is at its limit. A slot's window starts with the first
    /// attempt after the previous window ended.
    pub async fn take_slots(
        &self,
        slots: &[Slot],
        now: i64,
    ) -> Result<std::result::Result<(), Refused>> {
        // One order for every transaction, so two of them never wait on each other's
        // rows crosswise (PostgreSQL would abort one as a deadlock).
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_by(|&a, &b| slots[a].key.cmp(&slots[b].key));
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        for index in order {
            let slot = &slots[index];
            let row = sqlx::query(
                "INSERT INTO throttle (key, attempts, expires_at) VALUES ($1, 1, $2) \
                 ON CONFLICT (key) DO UPDATE SET \
                 attempts = CASE WHEN throttle.expires_at <= $3 THEN 1 \
                                 ELSE throttle.attempts + 1 END, \
                 expires_at = CASE WHEN throttle.expires_at <= $3 THEN excluded.expires_at \
                                   ELSE throttle.expires_at END \
                 RETURNING attempts, expires_at",
            )
            .bind(&slot.key)
            .bind(now.saturating_add(slot.window_ms))
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let attempts: i64 = row.try_get(0)?;
            if attempts > i64::from(slot.limit) {
                let until: i64 = row.try_get(1)?;
                // Dropped without commit: nothing of this attempt is counted.
                tx.rollback().await?;
                return Ok(Err(Refused { index, until }));
            }
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Give back one attempt of each key in `give_back` and clear the keys in `clear`
    /// (a login that turned out right).
    pub async fn release_slots(&self, give_back: &[&str], clear: &[&str], now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.begin_write().await?;
        for key in clear {
            sqlx::query("DELETE FROM throttle WHERE key = $1")
                .bind(*key)
                .execute(&mut *tx)
                .await?;
        }
        for key in give_back {
            sqlx::query(
                "UPDATE throttle SET attempts = attempts - 1 \
                 WHERE key = $1 AND attempts > 0 AND expires_at > $2",
            )
            .bind(*key)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drop expired tokens and throttling windows that have ended.
    pub async fn purge_expired(&self, now: i64) -> Result<()> {
        let _turn = self.write_turn().await;
        sqlx::query("DELETE FROM auth_tokens WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM throttle WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
