//! Sockets whose token died: revoked (logout, logout-all — from the bus, whichever
//! worker committed it) or expired (this worker's own timer, at the earliest expiry of
//! its sockets' tokens). Each such socket gets a Socket.IO DISCONNECT — the client's
//! "io server disconnect", after which it does not reconnect on its own — and its
//! Engine.IO session is closed behind it.
//!
//! The user's room is the index: a revocation names a user, and only that user's
//! sockets are looked at. Expiries are kept per token with a count of its sockets, so
//! the table holds one entry per live token, however many connections came and went.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use btp_sio::{Server, Socket};
use prometheus::IntCounterVec;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

use super::{room, Peer, NSP};
use crate::auth::now_millis;
use crate::bus::Revocation;
use crate::metrics::{counter_vec, MetricsError};
use crate::state::AppState;

/// Why a socket was closed for its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    Logout,
    LogoutAll,
    Expired,
    /// The store refused a call with the token: its revocation had not reached us.
    Refused,
}

impl Reason {
    const ALL: [Reason; 4] = [
        Reason::Logout,
        Reason::LogoutAll,
        Reason::Expired,
        Reason::Refused,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Reason::Logout => "logout",
            Reason::LogoutAll => "logout_all",
            Reason::Expired => "expired",
            Reason::Refused => "refused",
        }
    }
}

/// Live tokens of this worker's sockets, by expiry: (expires_at, token hash) → (user
/// id, sockets open with it).
type Expiries = BTreeMap<(i64, Arc<str>), (Arc<str>, usize)>;

/// A token whose sockets must close: (user id, token hash).
type Token = (Arc<str>, Arc<str>);

#[derive(Clone)]
pub(super) struct Revoker {
    inner: Arc<Inner>,
}

struct Inner {
    expiries: Mutex<Expiries>,
    /// An earlier expiry was added: the timer sleeps until it instead.
    earlier: Notify,
    closed: IntCounterVec,
}

fn lock(expiries: &Mutex<Expiries>) -> std::sync::MutexGuard<'_, Expiries> {
    expiries.lock().unwrap_or_else(|p| p.into_inner())
}

impl Revoker {
    pub(super) fn new(state: &AppState) -> Result<Revoker, MetricsError> {
        let values: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        let closed = counter_vec(
            "realtime_sockets_revoked_total",
            "Sockets closed because their token was revoked or expired, by reason",
            &["reason"],
            &[&values],
        )?;
        state
            .metrics
            .registry()
            .register(Box::new(closed.clone()))?;
        Ok(Revoker {
            inner: Arc::new(Inner {
                expiries: Mutex::new(BTreeMap::new()),
                earlier: Notify::new(),
                closed,
            }),
        })
    }

    /// Starts the bus listener and the expiry timer.
    pub(super) fn start(&self, state: &AppState, server: &Server<Peer>) {
        tokio::spawn(listen(
            self.clone(),
            state.bus.revocations(),
            server.clone(),
        ));
        tokio::spawn(expire(self.clone(), server.clone()));
    }

    /// A socket connected: its token's expiry is watched.
    pub(super) fn track(&self, peer: &Peer) {
        let key = (peer.expires_at, Arc::from(peer.caller.token_hash.as_str()));
        let mut expiries = lock(&self.inner.expiries);
        let first = expiries.keys().next().map(|(at, _)| *at);
        expiries
            .entry(key)
            .or_insert_with(|| (Arc::from(peer.caller.user_id.as_str()), 0))
            .1 += 1;
        drop(expiries);
        if first.is_none_or(|first| peer.expires_at < first) {
            self.inner.earlier.notify_one();
        }
    }

    /// A socket left: its token is watched for as long as another socket uses it.
    pub(super) fn untrack(&self, peer: &Peer) {
        let key = (peer.expires_at, Arc::from(peer.caller.token_hash.as_str()));
        let mut expiries = lock(&self.inner.expiries);
        if let Some(entry) = expiries.get_mut(&key) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                expiries.remove(&key);
            }
        }
    }

    /// Closes one socket for its token: DISCONNECT, then its session.
    pub(super) fn close(&self, socket: &Socket<Peer>, reason: Reason) {
        if !socket.connected() {
            return;
        }
        let peer = socket.data();
        tracing::info!(
            user = %peer.caller.user_id,
            session = %peer.client_session_id,
            reason = reason.as_str(),
            "[AUTH] SOCKET_REVOKED"
        );
        self.inner
            .closed
            .with_label_values(&[reason.as_str()])
            .inc();
        socket.disconnect();
        socket.close_session();
    }

    /// Closes the user's sockets opened with `token_hash` (every one of them when
    /// `None`). Returns how many.
    fn close_user(
        &self,
        server: &Server<Peer>,
        user_id: &str,
        token_hash: Option<&str>,
        reason: Reason,
    ) -> usize {
        let mut closed = 0;
        for socket in server.room(NSP, &room(user_id)) {
            if token_hash.is_none_or(|hash| socket.data().caller.token_hash == hash) {
                self.close(&socket, reason);
                closed += 1;
            }
        }
        closed
    }

    /// Takes the tokens expired at `now` out of the table; the next expiry after them.
    fn take_expired(&self, now: i64) -> (Vec<Token>, Option<i64>) {
        let mut expiries = lock(&self.inner.expiries);
        let mut expired = Vec::new();
        while let Some(entry) = expiries.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((_, hash), (user, _)) = entry.remove_entry();
            expired.push((user, hash));
        }
        let next = expiries.keys().next().map(|(at, _)| *at);
        (expired, next)
    }
}

/// Closes the sockets of every revocation the bus brings.
async fn listen(
    revoker: Revoker,
    mut revocations: tokio::sync::broadcast::Receiver<Arc<Revocation>>,
    server: Server<Peer>,
) {
    loop {
        match revocations.recv().await {
            Ok(revocation) => {
                let reason = match revocation.token_hash {
                    Some(_) => Reason::Logout,
                    None => Reason::LogoutAll,
                };
                revoker.close_user(
                    &server,
                    &revocation.user_id,
                    revocation.token_hash.as_deref(),
                    reason,
                );
            }
            Err(RecvError::Lagged(missed)) => {
                // Which sockets the missed revocations named is unknown: every session
                // is closed (Engine.IO close, so clients reconnect at once) and a
                // revoked token is refused at its new handshake.
                tracing::warn!(missed, "[AUTH] REVOCATIONS_LAGGED closing every session");
                for socket in server.sockets(NSP) {
                    socket.close_session();
                }
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Closes sockets when their token expires.
async fn expire(revoker: Revoker, server: Server<Peer>) {
    loop {
        let earlier = revoker.inner.earlier.notified();
        let (expired, next) = revoker.take_expired(now_millis());
        for (user, hash) in expired {
            revoker.close_user(&server, &user, Some(&hash), Reason::Expired);
        }
        let wait = match next {
            Some(at) => u64::try_from(at.saturating_sub(now_millis())).unwrap_or(0),
            None => u64::MAX,
        };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(wait.min(86_400_000))) => {}
            () = earlier => {}
        }
    }
}
