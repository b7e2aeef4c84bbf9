//! The change bus: every committed batch, in commit order, for the realtime layer to
//! broadcast as `sync:changes` to the user's other sessions; and every committed token
//! revocation, for it to close the sockets opened with those tokens.
//!
//! In one process (SQLite) the store publishes right after its commit, while it still
//! holds the write lock, so the bus order is the seq order. With PostgreSQL several API
//! processes share the data: the store sends `NOTIFY` inside the transaction (delivered
//! at commit, in commit order) with only the user id, seq range and origin session; each
//! process's listener reads the batch's exact changes back from `change_log` and
//! publishes them here. Payloads go by reference, so a 1,000-op batch is never truncated
//! by NOTIFY's 8 kB limit. Every process, including the writer, publishes through its
//! listener, so local and remote sessions see the same stream.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// How many batches a slow subscriber may fall behind before it sees `Lagged`; a client
/// that misses a batch notices the gap (`from` ≠ its cursor) and pulls.
const CAPACITY: usize = 4096;

/// One committed push (from a socket, REST, or another process).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeBatch {
    #[serde(skip)]
    pub user_id: String,
    /// The session that sent the ops; the realtime layer never echoes to it. REST
    /// requests without `X-Client-Session-Id` get a one-off `rest-<uuid>` session, so
    /// every change has an origin.
    #[serde(skip)]
    pub origin_session: Option<String>,
    /// The user's seq before and after the batch: a client whose cursor is `from`
    /// applies `changes` and moves to `to`; any other cursor pulls instead.
    pub from: i64,
    pub to: i64,
    /// The changed rows' states (`sync::Change` JSON), in seq order.
    pub changes: Vec<Value>,
}

impl ChangeBatch {
    /// The `sync:changes` payload: `{from, to, changes}`.
    pub fn payload(&self) -> Value {
        serde_json::json!({"from": self.from, "to": self.to, "changes": self.changes})
    }
}

/// Tokens revoked (logout, logout-all), on whichever process committed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub user_id: String,
    /// The sha256 of the one revoked token; `None` revokes every token of the user.
    pub token_hash: Option<String>,
}

/// How many revocations a subscriber may fall behind; one that lags closes every socket
/// it may have missed (see `crate::realtime`).
const REVOCATION_CAPACITY: usize = 1024;

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<ChangeBatch>>,
    revocations: broadcast::Sender<Arc<Revocation>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    pub fn new() -> Bus {
        let (tx, _) = broadcast::channel(CAPACITY);
        let (revocations, _) = broadcast::channel(REVOCATION_CAPACITY);
        Bus { tx, revocations }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeBatch>> {
        self.tx.subscribe()
    }

    pub(crate) fn publish(&self, batch: ChangeBatch) {
        // No subscriber is not an error: the process may serve REST only.
        let _ = self.tx.send(Arc::new(batch));
    }

    pub fn revocations(&self) -> broadcast::Receiver<Arc<Revocation>> {
        self.revocations.subscribe()
    }

    pub(crate) fn revoke(&self, revocation: Revocation) {
        let _ = self.revocations.send(Arc::new(revocation));
    }
}
