//! The Socket.IO server: namespaces with their handlers, the per-session Socket.IO state
//! (binary reassembly, joined namespaces), packet dispatch, rooms and broadcast.
//!
//! It is an [`EngineHandler`]: Engine.IO delivers messages, this decodes them and calls
//! the application. Handlers never run under a lock of ours; the auth callback and event
//! handlers are futures spawned as tasks, so a slow database call in one handler delays
//! neither the session's heartbeat nor its other events. A broadcast encodes its packet
//! once and queues the same `Bytes` on every recipient's session.
//!
//! What one client can make the application do at once is bounded here:
//! - at most `max_inflight_events` handlers run for one socket; the next event waits,
//!   and its session reads nothing more until a handler ends (a [`ReadGate`]);
//! - one auth decision per namespace and session: a CONNECT while another is being
//!   decided, or once the socket is connected, is ignored, and a CONNECT after a refusal
//!   gets the same refusal — none of them calls the auth callback (a database lookup in
//!   the product), so a body of 15,000 CONNECTs costs one lookup.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::args::Args;
use crate::config::Config;
use crate::engine::http::Body;
use crate::engine::packet::Message;
use crate::engine::server::{lock, Connection, EngineHandler, EngineServer, ReadGate};
use crate::engine::session::CloseReason;
use crate::metrics::MetricsSnapshot;
use crate::socket::{
    AckSender, Conn, ConnectError, DisconnectReason, Event, Handshake, Sink, Socket,
};
use crate::socketio::assemble::{Assembler, Complete};
use crate::socketio::packet::{self, Body as PacketBody};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type AuthFn<D> = Arc<dyn Fn(Handshake) -> BoxFuture<Result<D, ConnectError>> + Send + Sync>;
type ConnectionFn<D> = Arc<dyn Fn(&Socket<D>) + Send + Sync>;
type EventFn<D> = Arc<dyn Fn(Socket<D>, Event) -> BoxFuture<()> + Send + Sync>;
type DisconnectFn<D> = Arc<dyn Fn(&Socket<D>, DisconnectReason) + Send + Sync>;

/// The handlers of one namespace, built before the server starts.
pub struct Namespace<D: Send + Sync + 'static> {
    auth: AuthFn<D>,
    on_connection: Option<ConnectionFn<D>>,
    events: HashMap<String, EventFn<D>>,
    on_any: Option<EventFn<D>>,
    on_disconnect: Option<DisconnectFn<D>>,
}

impl<D: Send + Sync + 'static> Namespace<D> {
    /// A namespace whose connections are decided by `auth`: it gets the handshake and
    /// either returns the socket's data or refuses with a [`ConnectError`] (sent to the
    /// client as CONNECT_ERROR).
    pub fn new<F, Fut>(auth: F) -> Self
    where
        F: Fn(Handshake) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D, ConnectError>> + Send + 'static,
    {
        Namespace {
            auth: Arc::new(move |handshake| Box::pin(auth(handshake))),
            on_connection: None,
            events: HashMap::new(),
            on_any: None,
            on_disconnect: None,
        }
    }

    /// Called once a socket is connected (its CONNECT answer is queued): the place to
    /// join rooms and send a greeting.
    pub fn on_connection(mut self, f: impl Fn(&Socket<D>) + Send + Sync + 'static) -> Self {
        self.on_connection = Some(Arc::new(f));
        self
    }

    /// Handles the event `name`. The closure runs in the order events arrive; the
    /// future it returns is spawned, so handlers of one socket may overlap.
    pub fn on<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Socket<D>, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.events.insert(
            name.to_owned(),
            Arc::new(move |socket, event| Box::pin(f(socket, event))),
        );
        self
    }

    /// Handles every event without a handler of its own.
    pub fn on_any<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Socket<D>, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_any = Some(Arc::new(move |socket, event| Box::pin(f(socket, event))));
        self
    }

    /// Called once when a socket leaves the namespace, whatever the reason.
    pub fn on_disconnect(
        mut self,
        f: impl Fn(&Socket<D>, DisconnectReason) + Send + Sync + 'static,
    ) -> Self {
        self.on_disconnect = Some(Arc::new(f));
        self
    }
}

/// The sockets of one room, by socket id.
type Members<D> = HashMap<Arc<str>, Socket<D>>;

/// A registered namespace: its handlers, sockets and rooms.
pub(crate) struct Nsp<D: Send + Sync + 'static> {
    pub(crate) name: Arc<str>,
    handlers: Namespace<D>,
    sockets: RwLock<HashMap<Arc<str>, Socket<D>>>,
    rooms: RwLock<HashMap<Arc<str>, Members<D>>>,
}

impl<D: Send + Sync + 'static> Nsp<D> {
    pub(crate) fn add_to_room(&self, room: Arc<str>, socket: &Socket<D>) {
        write(&self.rooms)
            .entry(room)
            .or_default()
            .insert(Arc::clone(&socket.inner.id), socket.clone());
    }

    pub(crate) fn remove_from_room(&self, rooms: &[Arc<str>], id: &str) {
        if rooms.is_empty() {
            return;
        }
        let mut map = write(&self.rooms);
        for room in rooms {
            if let Some(members) = map.get_mut(room) {
                members.remove(id);
                if members.is_empty() {
                    map.remove(room);
                }
            }
        }
    }

    pub(crate) fn remove_socket(&self, id: &str) {
        write(&self.sockets).remove(id);
    }

    pub(crate) fn disconnected(&self, socket: &Socket<D>, reason: DisconnectReason) {
        if let Some(f) = &self.handlers.on_disconnect {
            f(socket, reason);
        }
    }

    /// Runs the event's handler now if the socket has room for one more, or returns the
    /// gate that runs it once a running handler ends.
    fn dispatch(&self, socket: Socket<D>, event: Event) -> Option<ReadGate> {
        let handler = self
            .handlers
            .events
            .get(&event.name)
            .or(self.handlers.on_any.as_ref())?;
        if let Some(slot) = Slot::try_take(&socket) {
            slot.run(handler(socket, event));
            return None;
        }
        socket.inner.conn.metrics().event_held();
        let handler = Arc::clone(handler);
        Some(Box::pin(async move {
            if let Some(slot) = Slot::take(&socket).await {
                slot.run(handler(socket, event));
            }
        }))
    }
}

/// One of a socket's `max_inflight_events` handler slots, given back when the handler
/// ends (or panics).
struct Slot<D: Send + Sync + 'static> {
    socket: Socket<D>,
}

impl<D: Send + Sync + 'static> Slot<D> {
    fn try_take(socket: &Socket<D>) -> Option<Slot<D>> {
        let permit = socket.inner.inflight.try_acquire().ok()?;
        permit.forget();
        Some(Slot {
            socket: socket.clone(),
        })
    }

    /// Waits for a slot; `None` if the socket is gone meanwhile.
    async fn take(socket: &Socket<D>) -> Option<Slot<D>> {
        let permit = socket.inner.inflight.acquire().await.ok()?;
        permit.forget();
        Some(Slot {
            socket: socket.clone(),
        })
    }

    fn run(self, handler: BoxFuture<()>) {
        tokio::spawn(async move {
            handler.await;
            drop(self);
        });
    }
}

impl<D: Send + Sync + 'static> Drop for Slot<D> {
    fn drop(&mut self) {
        self.socket.inner.inflight.add_permits(1);
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Socket.IO state of one Engine.IO session (opaque outside the crate).
pub struct SioState<D: Send + Sync + 'static> {
    assembler: Mutex<Assembler>,
    sockets: Mutex<Vec<Socket<D>>>,
    /// Namespaces whose CONNECT is being decided or was refused on this session.
    joins: Mutex<Vec<(Arc<str>, Join)>>,
}

/// Where a namespace's CONNECT stands on a session, until its socket is connected.
enum Join {
    /// The auth callback is deciding.
    Pending,
    /// Refused with this CONNECT_ERROR data; a later CONNECT gets the same.
    Refused(Value),
}

impl<D: Send + Sync + 'static> SioState<D> {
    fn socket(&self, nsp: &str) -> Option<Socket<D>> {
        lock(&self.sockets)
            .iter()
            .find(|s| s.namespace() == nsp)
            .cloned()
    }

    pub(crate) fn remove_socket(&self, nsp: &str) -> Option<Socket<D>> {
        let mut sockets = lock(&self.sockets);
        let index = sockets.iter().position(|s| s.namespace() == nsp)?;
        Some(sockets.swap_remove(index))
    }
}

/// The Socket.IO layer as an Engine.IO handler.
pub struct SioHandler<D: Send + Sync + 'static> {
    namespaces: HashMap<String, Arc<Nsp<D>>>,
    max_attachment_bytes: usize,
    max_inflight_events: usize,
}

impl<D: Send + Sync + 'static> EngineHandler for SioHandler<D> {
    type State = SioState<D>;

    fn new_state(&self) -> SioState<D> {
        SioState {
            assembler: Mutex::new(Assembler::new(self.max_attachment_bytes)),
            sockets: Mutex::new(Vec::new()),
            joins: Mutex::new(Vec::new()),
        }
    }

    fn on_message(
        &self,
        conn: &Arc<Conn<D>>,
        message: Message,
    ) -> Result<Option<ReadGate>, CloseReason> {
        let complete = {
            let mut assembler = lock(&conn.app_state().assembler);
            match &message {
                Message::Text(_) => match message.as_text() {
                    Some(text) => assembler.text(text),
                    None => return Err(CloseReason::ParseError),
                },
                Message::Binary(bytes) => assembler.binary(bytes.clone()),
            }
        };
        let Some(Complete { packet, binary }) = complete.map_err(|_| CloseReason::ParseError)?
        else {
            return Ok(None);
        };
        match packet.body {
            PacketBody::Connect(auth) => self.connect(conn, packet.nsp, auth),
            PacketBody::Disconnect => {
                if let Some(socket) = conn.app_state().remove_socket(&packet.nsp) {
                    socket.detach(DisconnectReason::ClientNamespaceDisconnect, false);
                }
            }
            PacketBody::Event { name, args } => {
                let Some(socket) = conn.app_state().socket(&packet.nsp) else {
                    return Ok(None);
                };
                conn.metrics().event_received();
                let ack = packet.id.map(|id| {
                    AckSender::new(
                        Arc::clone(conn) as Arc<dyn Sink>,
                        Arc::clone(&socket.inner.nsp.name),
                        id,
                    )
                });
                let event = Event {
                    name,
                    args: Args::from_parts(args, binary),
                    ack,
                };
                let nsp = Arc::clone(&socket.inner.nsp);
                return Ok(nsp.dispatch(socket, event));
            }
            PacketBody::Ack { args } => {
                if let (Some(socket), Some(id)) = (conn.app_state().socket(&packet.nsp), packet.id)
                {
                    socket.resolve_ack(id, Args::from_parts(args, binary));
                }
            }
            PacketBody::ConnectError(_) => return Err(CloseReason::ParseError),
        }
        Ok(None)
    }

    fn on_close(&self, conn: &Arc<Conn<D>>, reason: CloseReason) {
        let sockets = std::mem::take(&mut *lock(&conn.app_state().sockets));
        for socket in sockets {
            socket.detach(DisconnectReason::Closed(reason), false);
        }
    }
}

impl<D: Send + Sync + 'static> SioHandler<D> {
    fn connect(
        &self,
        conn: &Arc<Conn<D>>,
        name: String,
        auth: Option<Box<serde_json::value::RawValue>>,
    ) {
        let Some(nsp) = self.namespaces.get(&name) else {
            let error = serde_json::json!({ "message": "Invalid namespace" });
            conn.push(packet::connect_error(&name, &error));
            return;
        };
        let state = conn.app_state();
        if state.socket(&name).is_some() {
            conn.metrics().connect_ignored();
            return;
        }
        {
            let mut joins = lock(&state.joins);
            match joins.iter().find(|(n, _)| **n == *name) {
                Some((_, Join::Pending)) => {
                    conn.metrics().connect_ignored();
                    return;
                }
                Some((_, Join::Refused(error))) => {
                    let refusal = packet::connect_error(&name, error);
                    drop(joins);
                    conn.metrics().connect_ignored();
                    conn.push(refusal);
                    return;
                }
                None => joins.push((Arc::clone(&nsp.name), Join::Pending)),
            }
        }
        let auth = auth
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        let handshake = Handshake {
            namespace: name,
            auth,
            transport: conn.transport(),
        };
        let decision = (nsp.handlers.auth)(handshake);
        let conn = Arc::clone(conn);
        let nsp = Arc::clone(nsp);
        let max_inflight = self.max_inflight_events;
        tokio::spawn(async move {
            let decision = decision.await;
            let refusal = {
                let mut joins = lock(&conn.app_state().joins);
                let index = joins.iter().position(|(n, _)| *n == nsp.name);
                match (&decision, index) {
                    (Ok(_), Some(i)) => {
                        joins.swap_remove(i);
                        None
                    }
                    (Err(error), Some(i)) => {
                        let value = error.to_value();
                        let refusal = packet::connect_error(&nsp.name, &value);
                        joins[i].1 = Join::Refused(value);
                        Some(refusal)
                    }
                    (_, None) => None,
                }
            };
            match (decision, refusal) {
                (Ok(data), _) => attach(conn, nsp, data, max_inflight),
                (Err(_), Some(refusal)) => {
                    conn.push(refusal);
                }
                (Err(_), None) => {}
            }
        });
    }
}

/// Adds an authorized socket to its session and namespace, answers CONNECT, and runs
/// the connection callback.
fn attach<D: Send + Sync + 'static>(
    conn: Arc<Conn<D>>,
    nsp: Arc<Nsp<D>>,
    data: D,
    max_inflight: usize,
) {
    let socket = Socket::new(Arc::clone(&conn), Arc::clone(&nsp), data, max_inflight);
    let id = Arc::clone(&socket.inner.id);
    write(&nsp.sockets).insert(Arc::clone(&id), socket.clone());
    let added = {
        let mut sockets = lock(&conn.app_state().sockets);
        // `close_with` cancels before `on_close` drains this list, so a session seen
        // open here will still have this socket detached by `on_close`.
        if conn.is_closed() || sockets.iter().any(|s| s.namespace() == &*nsp.name) {
            false
        } else {
            sockets.push(socket.clone());
            true
        }
    };
    if !added {
        nsp.remove_socket(&id);
        return;
    }
    conn.metrics().socket_connected();
    conn.claim();
    conn.push(packet::connect(&nsp.name, &id));
    if let Some(f) = &nsp.handlers.on_connection {
        f(&socket);
    }
}

/// Builds a [`Server`].
pub struct ServerBuilder<D: Send + Sync + 'static> {
    config: Config,
    namespaces: HashMap<String, Namespace<D>>,
}

impl<D: Send + Sync + 'static> ServerBuilder<D> {
    /// Registers a namespace (`"/"`, `"/custom"`, ...). Clients joining any other
    /// namespace get CONNECT_ERROR `{"message":"Invalid namespace"}`.
    pub fn namespace(mut self, name: &str, namespace: Namespace<D>) -> Self {
        self.namespaces.insert(name.to_owned(), namespace);
        self
    }

    pub fn build(self) -> Server<D> {
        let max_attachment_bytes = usize::try_from(self.config.max_payload).unwrap_or(usize::MAX);
        let namespaces = self
            .namespaces
            .into_iter()
            .map(|(name, handlers)| {
                let nsp = Nsp {
                    name: name.as_str().into(),
                    handlers,
                    sockets: RwLock::new(HashMap::new()),
                    rooms: RwLock::new(HashMap::new()),
                };
                (name, Arc::new(nsp))
            })
            .collect();
        let connect_timeout = self.config.connect_timeout;
        let handler = SioHandler {
            namespaces,
            max_attachment_bytes,
            max_inflight_events: self.config.max_inflight_events.max(1),
        };
        Server {
            engine: EngineServer::build(self.config, handler, Some(connect_timeout)),
        }
    }
}

/// A Socket.IO v5 server. Cheap to clone; all clones serve the same sessions.
pub struct Server<D: Send + Sync + 'static> {
    engine: EngineServer<SioHandler<D>>,
}

impl<D: Send + Sync + 'static> Clone for Server<D> {
    fn clone(&self) -> Self {
        Server {
            engine: self.engine.clone(),
        }
    }
}

impl<D: Send + Sync + 'static> Server<D> {
    pub fn builder(config: Config) -> ServerBuilder<D> {
        ServerBuilder {
            config,
            namespaces: HashMap::new(),
        }
    }

    /// Answers one HTTP request under the configured path (see
    /// [`EngineServer::handle`]).
    pub async fn handle<B>(&self, req: http::Request<B>) -> http::Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.engine.handle(req).await
    }

    /// Answers a WebSocket request whose head the caller read from `stream` itself (see
    /// [`EngineServer::handle_websocket`]).
    pub async fn handle_websocket(&self, req: http::Request<()>, stream: tokio::net::TcpStream) {
        self.engine.handle_websocket(req, stream).await;
    }

    /// [`Server::handle_websocket`], adding `headers` to the answer (see
    /// [`EngineServer::handle_websocket_with`]).
    pub async fn handle_websocket_with(
        &self,
        req: http::Request<()>,
        stream: tokio::net::TcpStream,
        headers: http::HeaderMap,
    ) {
        self.engine
            .handle_websocket_with(req, stream, headers)
            .await;
    }

    /// Whether a request path belongs to this server.
    pub fn handles_path(&self, path: &str) -> bool {
        self.engine.handles_path(path)
    }

    pub fn config(&self) -> &Config {
        self.engine.config()
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.engine.metrics()
    }

    /// Closes every session (Engine.IO close; each socket's disconnect callback runs
    /// with [`CloseReason::ServerShutdown`]) and waits for their tasks. Clients are not
    /// sent Socket.IO DISCONNECT, which would stop their automatic reconnection.
    pub async fn shutdown(&self) {
        self.engine.shutdown().await;
    }

    fn nsp(&self, name: &str) -> Option<&Arc<Nsp<D>>> {
        self.engine.handler().namespaces.get(name)
    }

    /// Sends an event to every socket of namespace `nsp` in `room` (every socket of the
    /// namespace when `room` is `None`) for which `skip` is false. The packet is encoded
    /// once. Returns the number of sockets it was queued for.
    pub fn broadcast(
        &self,
        nsp: &str,
        room: Option<&str>,
        event: &str,
        args: &Args,
        skip: impl Fn(&Socket<D>) -> bool,
    ) -> usize {
        let Some(ns) = self.nsp(nsp) else { return 0 };
        let recipients: Vec<Socket<D>> = match room {
            Some(room) => read(&ns.rooms)
                .get(room)
                .map(|members| members.values().cloned().collect())
                .unwrap_or_default(),
            None => read(&ns.sockets).values().cloned().collect(),
        };
        if recipients.is_empty() {
            return 0;
        }
        let encoded = packet::event(nsp, None, event, args);
        let mut sent = 0;
        for socket in &recipients {
            if !skip(socket) && Connection::push_encoded(&*socket.inner.conn, &encoded) {
                sent += 1;
            }
        }
        self.engine.shared().metrics.events_sent(sent as u64);
        sent
    }

    /// The sockets connected to a namespace.
    pub fn sockets(&self, nsp: &str) -> Vec<Socket<D>> {
        self.nsp(nsp)
            .map(|ns| read(&ns.sockets).values().cloned().collect())
            .unwrap_or_default()
    }

    /// The socket with this id in a namespace.
    pub fn socket(&self, nsp: &str, id: &str) -> Option<Socket<D>> {
        self.nsp(nsp)
            .and_then(|ns| read(&ns.sockets).get(id).cloned())
    }

    /// The sockets in a room of a namespace.
    pub fn room(&self, nsp: &str, room: &str) -> Vec<Socket<D>> {
        self.nsp(nsp)
            .and_then(|ns| {
                read(&ns.rooms)
                    .get(room)
                    .map(|m| m.values().cloned().collect())
            })
            .unwrap_or_default()
    }
}
