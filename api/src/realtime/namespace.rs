//! The product's namespace `/`: who may connect (a live bearer token in the handshake
//! `auth`), and what `sync:pull` / `sync:push` do — answer through their acks with
//! exactly the HTTP API's JSON, as the token's [`Caller`], so the store checks the token
//! on every call.

use btp_sio::{Args, ConnectError, Namespace, Socket};
use serde_json::Value;

use super::revoke::{Reason, Revoker};
use super::{room, Peer};
use crate::auth::token_hash;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Caller;

/// Longest accepted `clientSessionId`.
const CLIENT_SESSION_ID_MAX: usize = 200;

pub(super) fn namespace(state: AppState, revoker: Revoker) -> Namespace<Peer> {
    let auth_state = state.clone();
    let pull_state = state.clone();
    let push_state = state;
    let (pull_revoker, push_revoker, joined, left) =
        (revoker.clone(), revoker.clone(), revoker.clone(), revoker);
    Namespace::new(move |handshake| {
        let state = auth_state.clone();
        async move {
            let token = handshake
                .auth
                .get("token")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let bearer = match state.auth.authenticate(token).await {
                Ok(Some(bearer)) => bearer,
                Ok(None) => return Err(ConnectError::new("unauthorized")),
                Err(e) => {
                    tracing::error!(error = %e.message, "[SYNC] SOCKET_AUTH_FAILED");
                    return Err(ConnectError::new("unavailable"));
                }
            };
            let client_session_id = match handshake
                .auth
                .get("clientSessionId")
                .and_then(Value::as_str)
            {
                Some(id) if !id.is_empty() && id.len() <= CLIENT_SESSION_ID_MAX => id.to_owned(),
                _ => format!("sio-{}", uuid::Uuid::new_v4()),
            };
            Ok(Peer {
                caller: Caller {
                    user_id: bearer.user.id,
                    token_hash: token_hash(token),
                },
                expires_at: bearer.expires_at,
                client_session_id,
            })
        }
    })
    .on_connection(move |socket| {
        let peer = socket.data();
        socket.join(&room(&peer.caller.user_id));
        joined.track(peer);
        tracing::info!(
            user = %peer.caller.user_id,
            session = %peer.client_session_id,
            transport = ?socket.transport(),
            "[SYNC] SOCKET_CONNECTED"
        );
    })
    .on("sync:pull", move |socket, event| {
        let state = pull_state.clone();
        let revoker = pull_revoker.clone();
        async move {
            let body = first_arg(&event.args);
            let peer = socket.data();
            let reply = state
                .sync
                .pull(&peer.caller, &body, Some(&peer.client_session_id))
                .await;
            answer(&socket, &revoker, event.ack, reply);
        }
    })
    .on("sync:push", move |socket, event| {
        let state = push_state.clone();
        let revoker = push_revoker.clone();
        async move {
            let body = first_arg(&event.args);
            let peer = socket.data();
            let reply = state
                .sync
                .push(&peer.caller, &body, Some(&peer.client_session_id))
                .await;
            answer(&socket, &revoker, event.ack, reply);
        }
    })
    .on_disconnect(move |socket: &Socket<Peer>, reason| {
        let peer = socket.data();
        left.untrack(peer);
        tracing::info!(
            user = %peer.caller.user_id,
            session = %peer.client_session_id,
            reason = reason.as_str(),
            "[SYNC] SOCKET_DISCONNECTED"
        );
    })
}

/// The event's payload, or `{}` when absent or not JSON (the sync service then answers
/// with its usual validation error).
fn first_arg(args: &Args) -> Value {
    args.get::<Value>(0)
        .unwrap_or(Value::Object(Default::default()))
}

/// Sends the reply as the event's ack (serialized once, straight into the packet's
/// argument). A call the store refused for its token closes the socket too: its
/// revocation did not reach this worker (a lost notification).
fn answer(
    socket: &Socket<Peer>,
    revoker: &Revoker,
    ack: Option<btp_sio::AckSender>,
    reply: Result<impl serde::Serialize, ApiError>,
) {
    let refused = matches!(&reply, Err(e) if e.code == "unauthorized");
    if let Some(ack) = ack {
        let args = match &reply {
            Ok(value) => Args::one(value),
            Err(e) => Args::one(&e.to_json()),
        };
        if let Ok(args) = args {
            // The socket may be gone by now; its device will pull on reconnect.
            let _ = ack.send(&args);
        }
    }
    if refused {
        revoker.close(socket, Reason::Refused);
    }
}
