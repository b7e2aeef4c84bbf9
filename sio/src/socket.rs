//! The application's view of one namespace connection: [`Socket`] (emit, acks, rooms,
//! typed per-socket data, disconnect), the [`Event`] a handler receives with its
//! [`AckSender`], and the handshake and disconnect vocabulary.
//!
//! A socket holds its Engine.IO session directly, so an emit is an encode plus a push
//! onto that session's outbox; rooms are kept by the namespace (see `server.rs`) and
//! mirrored here so a disconnect can leave them without scanning every room.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::args::Args;
use crate::engine::server::{lock, Connection};
use crate::engine::session::{CloseReason, Transport};
use crate::server::{Nsp, SioHandler};
use crate::socketio::packet::{self, Encoded};

/// What the auth callback of a namespace receives.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The namespace being joined (`"/"` for the main one).
    pub namespace: String,
    /// The CONNECT packet's payload — `auth` in `io(url, { auth })` — or `{}`.
    pub auth: Value,
    /// The transport the session was on when it joined.
    pub transport: Transport,
}

/// Refusal of a namespace connection, sent as the CONNECT_ERROR data
/// `{"message": ..., "data": ...}` (`data` only when set).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<Value>,
}

impl ConnectError {
    pub fn new(message: impl Into<String>) -> Self {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    pub(crate) fn to_value(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("message".into(), Value::String(self.message.clone()));
        if let Some(data) = &self.data {
            map.insert("data".into(), data.clone());
        }
        Value::Object(map)
    }
}

/// Why a socket left its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The client sent DISCONNECT (`socket.disconnect()` on the client).
    ClientNamespaceDisconnect,
    /// The server called [`Socket::disconnect`].
    ServerNamespaceDisconnect,
    /// The Engine.IO session ended.
    Closed(CloseReason),
}

impl DisconnectReason {
    /// The Node server's name for the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::Closed(reason) => reason.as_str(),
        }
    }
}

/// The socket is no longer connected; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("socket disconnected")]
pub struct Disconnected;

/// An acknowledgement that will not come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("socket disconnected before the acknowledgement")]
    Disconnected,
}

/// Where encoded packets for one session go; erases the server's data type so
/// [`Event`] and [`AckSender`] need no type parameter.
pub(crate) trait Sink: Send + Sync {
    fn push_encoded(&self, encoded: &Encoded) -> bool;
}

impl<D: Send + Sync + 'static> Sink for Connection<SioHandler<D>> {
    fn push_encoded(&self, encoded: &Encoded) -> bool {
        let pushed = Connection::push_encoded(self, encoded);
        if pushed {
            self.metrics().events_sent(1);
        }
        pushed
    }
}

/// An event received from a client.
#[derive(Debug)]
pub struct Event {
    pub name: String,
    pub args: Args,
    /// Present when the client asked for an acknowledgement.
    pub ack: Option<AckSender>,
}

/// Answers one event's acknowledgement. Dropping it sends nothing.
pub struct AckSender {
    sink: Arc<dyn Sink>,
    nsp: Arc<str>,
    id: u64,
}

impl std::fmt::Debug for AckSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckSender")
            .field("nsp", &self.nsp)
            .field("id", &self.id)
            .finish()
    }
}

impl AckSender {
    pub(crate) fn new(sink: Arc<dyn Sink>, nsp: Arc<str>, id: u64) -> Self {
        AckSender { sink, nsp, id }
    }

    /// Sends the acknowledgement with these arguments.
    pub fn send(self, args: &Args) -> Result<(), Disconnected> {
        let encoded = packet::ack(&self.nsp, self.id, args);
        if self.sink.push_encoded(&encoded) {
            Ok(())
        } else {
            Err(Disconnected)
        }
    }
}

pub(crate) type Conn<D> = Connection<SioHandler<D>>;

/// One client's connection to one namespace. Cheap to clone.
pub struct Socket<D: Send + Sync + 'static> {
    pub(crate) inner: Arc<SocketInner<D>>,
}

impl<D: Send + Sync + 'static> Clone for Socket<D> {
    fn clone(&self) -> Self {
        Socket {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<D: Send + Sync + 'static> std::fmt::Debug for Socket<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.inner.id)
            .field("namespace", &self.inner.nsp.name)
            .finish()
    }
}

pub(crate) struct SocketInner<D: Send + Sync + 'static> {
    pub(crate) id: Arc<str>,
    pub(crate) nsp: Arc<Nsp<D>>,
    pub(crate) conn: Arc<Conn<D>>,
    data: D,
    connected: AtomicBool,
    rooms: Mutex<Vec<Arc<str>>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<Args>>>,
    next_ack: AtomicU64,
    /// Free event-handler slots (`max_inflight_events`), see `server::Slot`.
    pub(crate) inflight: tokio::sync::Semaphore,
}

impl<D: Send + Sync + 'static> Socket<D> {
    pub(crate) fn new(conn: Arc<Conn<D>>, nsp: Arc<Nsp<D>>, data: D, max_inflight: usize) -> Self {
        Socket {
            inner: Arc::new(SocketInner {
                id: crate::engine::server::random_id().into(),
                nsp,
                conn,
                data,
                connected: AtomicBool::new(true),
                rooms: Mutex::new(Vec::new()),
                acks: Mutex::new(HashMap::new()),
                next_ack: AtomicU64::new(0),
                inflight: tokio::sync::Semaphore::new(max_inflight),
            }),
        }
    }

    /// The Socket.IO socket id (public; distinct from the Engine.IO sid, which is never
    /// exposed).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn namespace(&self) -> &str {
        &self.inner.nsp.name
    }

    /// The data the namespace's auth callback attached.
    pub fn data(&self) -> &D {
        &self.inner.data
    }

    pub fn transport(&self) -> Transport {
        self.inner.conn.transport()
    }

    pub fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// Sends an event.
    pub fn emit(&self, event: &str, args: &Args) -> Result<(), Disconnected> {
        if !self.connected() {
            return Err(Disconnected);
        }
        let encoded = packet::event(&self.inner.nsp.name, None, event, args);
        self.push(&encoded)
    }

    pub(crate) fn push(&self, encoded: &Encoded) -> Result<(), Disconnected> {
        if Sink::push_encoded(&*self.inner.conn, encoded) {
            Ok(())
        } else {
            Err(Disconnected)
        }
    }

    /// Sends an event that asks for an acknowledgement; the future resolves with the
    /// client's ack arguments. Bound the wait with `tokio::time::timeout`; dropping
    /// the future forgets the ack.
    pub fn emit_with_ack(&self, event: &str, args: &Args) -> Result<AckFuture, Disconnected> {
        if !self.connected() {
            return Err(Disconnected);
        }
        let id = self.inner.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.acks).insert(id, tx);
        let encoded = packet::event(&self.inner.nsp.name, Some(id), event, args);
        let guard = AckGuard {
            socket: Arc::downgrade(&self.inner) as Weak<dyn AckTable>,
            id,
        };
        if let Err(e) = self.push(&encoded) {
            drop(guard);
            return Err(e);
        }
        Ok(AckFuture { rx, _guard: guard })
    }

    pub(crate) fn resolve_ack(&self, id: u64, args: Args) {
        if let Some(tx) = lock(&self.inner.acks).remove(&id) {
            let _ = tx.send(args);
        }
    }

    /// Joins a room (idempotent).
    pub fn join(&self, room: &str) {
        if !self.connected() {
            return;
        }
        let room: Arc<str> = {
            let mut rooms = lock(&self.inner.rooms);
            if rooms.iter().any(|r| &**r == room) {
                return;
            }
            let room: Arc<str> = room.into();
            rooms.push(Arc::clone(&room));
            room
        };
        self.inner.nsp.add_to_room(Arc::clone(&room), self);
        // A disconnect racing with this join may have missed the room.
        if !self.connected() {
            self.inner.nsp.remove_from_room(&[room], &self.inner.id);
        }
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) {
        let removed = {
            let mut rooms = lock(&self.inner.rooms);
            let before = rooms.len();
            rooms.retain(|r| &**r != room);
            rooms.len() != before
        };
        if removed {
            self.inner
                .nsp
                .remove_from_room(&[room.into()], &self.inner.id);
        }
    }

    /// The rooms this socket is in.
    pub fn rooms(&self) -> Vec<String> {
        lock(&self.inner.rooms)
            .iter()
            .map(|r| r.to_string())
            .collect()
    }

    /// Disconnects from this namespace (the client gets DISCONNECT and will not
    /// reconnect on its own); the Engine.IO session stays open.
    pub fn disconnect(&self) {
        if self.detach(DisconnectReason::ServerNamespaceDisconnect, true) {
            self.inner
                .conn
                .app_state()
                .remove_socket(&self.inner.nsp.name);
        }
    }

    /// Closes the whole Engine.IO session (every namespace of this client); the client
    /// reconnects on its own.
    pub fn close_session(&self) {
        self.inner.conn.close();
    }

    /// Leaves the namespace once: registry, rooms, pending acks, then the callback.
    pub(crate) fn detach(&self, reason: DisconnectReason, notify_client: bool) -> bool {
        if !self.inner.connected.swap(false, Ordering::AcqRel) {
            return false;
        }
        if notify_client {
            self.inner
                .conn
                .push(packet::disconnect(&self.inner.nsp.name));
        }
        self.inner.nsp.remove_socket(&self.inner.id);
        let rooms = std::mem::take(&mut *lock(&self.inner.rooms));
        self.inner.nsp.remove_from_room(&rooms, &self.inner.id);
        lock(&self.inner.acks).clear();
        self.inner.conn.metrics().socket_disconnected();
        self.inner.nsp.disconnected(self, reason);
        true
    }
}

/// Type-erased access to a socket's pending acks, for [`AckGuard`].
trait AckTable: Send + Sync {
    fn forget(&self, id: u64);
}

impl<D: Send + Sync + 'static> AckTable for SocketInner<D> {
    fn forget(&self, id: u64) {
        lock(&self.acks).remove(&id);
    }
}

struct AckGuard {
    socket: Weak<dyn AckTable>,
    id: u64,
}

impl Drop for AckGuard {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.upgrade() {
            socket.forget(self.id);
        }
    }
}

/// Resolves with the client's acknowledgement of an [`Socket::emit_with_ack`].
pub struct AckFuture {
    rx: oneshot::Receiver<Args>,
    _guard: AckGuard,
}

impl Future for AckFuture {
    type Output = Result<Args, AckError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.map_err(|_| AckError::Disconnected))
    }
}
