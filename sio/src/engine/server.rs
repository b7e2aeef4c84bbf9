//! The Engine.IO IO layer: routes HTTP requests (handshake, long-polling GET and POST,
//! WebSocket connect and upgrade), keeps the session registry, and runs each session.
//!
//! Per session there is one task, its *driver*: it owns the heartbeat timer and, once
//! the session is on WebSocket, the socket, reading frames into the session and draining
//! the session's outbox into frames. The read of the next frame is one future kept
//! across the driver's loop and polled in its `select!` with the timer and the wake-up,
//! never dropped mid-session: a fastwebsockets read dropped at an await would lose the
//! bytes of a frame it had consumed so far. Everything else
//! (emits, broadcasts, acks) only touches the session's state under a short mutex and
//! wakes the driver or the pending GET — no task per message, no task per timer.
//!
//! Backpressure from the application: [`EngineHandler::on_message`] may answer with a
//! [`ReadGate`], a future the session waits for before it takes its next packet — the
//! WebSocket driver stops reading its socket (the heartbeat and writes go on), a polling
//! POST feeds the rest of its body only then and is answered after. So a client that
//! sends events faster than they are handled is slowed down at its own connection,
//! holding at most one decoded packet and the rest of one body.
//!
//! A WebSocket request comes either through hyper ([`EngineServer::handle`], the `101`
//! written by hyper and the socket taken from its upgrade) or straight off a connection
//! whose head the application read itself ([`EngineServer::handle_websocket`], the `101`
//! or the refusal written here). The session is the same either way.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use fastwebsockets::{OpCode, Payload, WebSocketError};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::http::{self as h, Body, CorsHeaders, ErrorCode};
use super::packet::{self, Frame, Handshake, Message, Packet};
use super::session::{
    CloseReason, PollError, PushError, SessionState, Timing, Transport, UpgradeError,
};
use crate::config::Config;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::socketio::packet::Encoded;

type WsReader = fastwebsockets::WebSocketRead<tokio::io::ReadHalf<Io>>;
type WsWriter = fastwebsockets::WebSocketWrite<tokio::io::WriteHalf<Io>>;

/// What the session waits for before it takes its next packet (see the module doc).
pub type ReadGate = Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// What an application plugs into an [`EngineServer`].
pub trait EngineHandler: Send + Sync + Sized + 'static {
    /// Per-session application state, reachable through [`Connection::app_state`].
    type State: Send + Sync + 'static;

    fn new_state(&self) -> Self::State;

    /// A session opened (its handshake is queued or sent).
    fn on_open(&self, _conn: &Arc<Connection<Self>>) {}

    /// A message arrived. `Err` closes the session with that reason; `Ok(Some(gate))`
    /// holds the session's next packet until `gate` completes.
    fn on_message(
        &self,
        conn: &Arc<Connection<Self>>,
        message: Message,
    ) -> Result<Option<ReadGate>, CloseReason>;

    /// The session ended; called exactly once.
    fn on_close(&self, _conn: &Arc<Connection<Self>>, _reason: CloseReason) {}
}

/// An Engine.IO server: hand it every request under its path with
/// [`EngineServer::handle`].
pub struct EngineServer<H: EngineHandler> {
    shared: Arc<Shared<H>>,
}

impl<H: EngineHandler> Clone for EngineServer<H> {
    fn clone(&self) -> Self {
        EngineServer {
            shared: Arc::clone(&self.shared),
        }
    }
}

pub(crate) struct Shared<H: EngineHandler> {
    config: Config,
    claim_timeout: Option<Duration>,
    handler: H,
    sessions: RwLock<HashMap<Arc<str>, Arc<Connection<H>>>>,
    closing: AtomicBool,
    tasks: TaskTracker,
    pub(crate) metrics: Metrics,
}

/// One Engine.IO session, whatever its transport.
pub struct Connection<H: EngineHandler> {
    sid: Arc<str>,
    state: Mutex<SessionState>,
    /// Wakes the driver: new output on WebSocket, a deadline moved, the socket handed
    /// over, the session closed.
    wake_driver: Notify,
    /// Wakes the pending long-polling GET.
    wake_poll: Notify,
    closed: CancellationToken,
    /// The WebSocket of a finished upgrade, for the driver.
    handoff: Mutex<Option<Box<Ws>>>,
    shared: Arc<Shared<H>>,
    app: H::State,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves consistent data behind.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// 15 random bytes as 20 base64url characters.
pub(crate) fn random_id() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 15]>())
}

impl<H: EngineHandler> EngineServer<H> {
    /// A bare Engine.IO server (no connect timeout).
    pub fn new(config: Config, handler: H) -> Self {
        Self::build(config, handler, None)
    }

    pub(crate) fn build(config: Config, handler: H, claim_timeout: Option<Duration>) -> Self {
        EngineServer {
            shared: Arc::new(Shared {
                config,
                claim_timeout,
                handler,
                sessions: RwLock::new(HashMap::new()),
                closing: AtomicBool::new(false),
                tasks: TaskTracker::new(),
                metrics: Metrics::default(),
            }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<H>> {
        &self.shared
    }

    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Whether `path` is under this server's path (with or without the final slash).
    pub fn handles_path(&self, path: &str) -> bool {
        let base = &self.shared.config.path;
        path.starts_with(base.as_str()) || path == base.trim_end_matches('/')
    }

    /// Counters for monitoring.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        read_sessions(&self.shared).len()
    }

    /// Answers one HTTP request under the server's path: a handshake, a long-polling
    /// GET or POST, a WebSocket connect or upgrade, or a CORS preflight.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.route(req, &mut None).await
    }

    /// Answers a WebSocket request (connect or upgrade) whose head the caller read from
    /// `stream` itself, leaving none of it unread: the answer is written on `stream` — a
    /// `101` and the session runs on it, or an error and the connection is closed.
    ///
    /// For servers that look at a connection's first request before handing it to an
    /// HTTP server: a WebSocket taken this way keeps nothing of the HTTP server (hyper
    /// keeps the upgraded connection boxed, with its read-ahead buffer, for the
    /// socket's life). [`EngineServer::handle`] serves the same requests through hyper.
    pub async fn handle_websocket(&self, req: Request<()>, stream: TcpStream) {
        self.handle_websocket_with(req, stream, HeaderMap::new())
            .await;
    }

    /// [`EngineServer::handle_websocket`], adding `headers` to the answer, whatever it is
    /// (a proxy's own response headers, for a connection it handed over).
    pub async fn handle_websocket_with(
        &self,
        req: Request<()>,
        stream: TcpStream,
        headers: HeaderMap,
    ) {
        let mut bare = Some(Bare { stream, headers });
        let response = self
            .route(req.map(|()| Empty::<Bytes>::new()), &mut bare)
            .await;
        if let Some(Bare {
            mut stream,
            headers,
        }) = bare
        {
            let limit = self.shared.config.ping_timeout;
            let _ =
                tokio::time::timeout(limit, write_refusal(&mut stream, response, headers)).await;
        }
    }

    /// [`EngineServer::handle`]; a WebSocket request answered `101` takes its socket
    /// from `bare` when given, else from hyper's upgrade.
    async fn route<B>(&self, mut req: Request<B>, bare: &mut Option<Bare>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let shared = &self.shared;
        let cors = CorsHeaders::for_request(&shared.config.cors, req.headers());
        if !self.handles_path(req.uri().path()) {
            return h::error(StatusCode::NOT_FOUND, ErrorCode::BadRequest, &cors);
        }
        if req.method() == Method::OPTIONS {
            return h::preflight(&cors, req.headers());
        }
        let query = req.uri().query().unwrap_or("").to_owned();
        let query = h::parse_query(&query);
        let transport = match query.transport {
            Some("polling") => Transport::Polling,
            Some("websocket") => Transport::WebSocket,
            _ => return h::bad_request(ErrorCode::UnknownTransport, &cors),
        };
        if query.eio != Some("4") {
            return h::bad_request(ErrorCode::UnsupportedProtocolVersion, &cors);
        }
        let is_upgrade = fastwebsockets::upgrade::is_upgrade_request(&req);
        if is_upgrade != (transport == Transport::WebSocket) {
            return h::bad_request(ErrorCode::BadRequest, &cors);
        }
        let Some(sid) = query.sid else {
            if req.method() != Method::GET {
                return h::bad_request(ErrorCode::BadHandshakeMethod, &cors);
            }
            return match transport {
                Transport::Polling => self.polling_handshake(&cors),
                Transport::WebSocket => self.websocket_handshake(&mut req, &cors, bare),
            };
        };
        let Some(conn) = read_sessions(shared).get(sid).cloned() else {
            return h::bad_request(ErrorCode::UnknownSid, &cors);
        };
        match (transport, req.method()) {
            (Transport::WebSocket, _) => self.websocket_upgrade(conn, &mut req, &cors, bare),
            (Transport::Polling, &Method::GET) => poll(conn, &cors).await,
            (Transport::Polling, &Method::POST) => post(conn, req.into_body(), &cors).await,
            _ => h::bad_request(ErrorCode::BadRequest, &cors),
        }
    }

    fn polling_handshake(&self, cors: &CorsHeaders) -> Response<Body> {
        let Some(conn) = self.shared.create(Transport::Polling) else {
            return h::error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Forbidden, cors);
        };
        let open = self.shared.handshake_frame(&conn.sid, &["websocket"]);
        self.shared.tasks.spawn(drive(Arc::clone(&conn), None));
        self.shared.handler.on_open(&conn);
        h::text(packet::encode_payload(&[open]), cors)
    }

    fn websocket_handshake<B>(
        &self,
        req: &mut Request<B>,
        cors: &CorsHeaders,
        bare: &mut Option<Bare>,
    ) -> Response<Body> {
        if self.shared.closing.load(Ordering::Acquire) {
            return h::error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Forbidden, cors);
        }
        let Ok((response, upgrade)) = fastwebsockets::upgrade::upgrade(req) else {
            return h::bad_request(ErrorCode::BadRequest, cors);
        };
        let upgrading = Upgrading::new(upgrade, &response, bare, self.shared.config.ping_timeout);
        let shared = Arc::clone(&self.shared);
        self.shared.tasks.spawn(async move {
            let Some(ws) = upgrading.open().await else {
                return;
            };
            let Some(conn) = shared.create(Transport::WebSocket) else {
                return;
            };
            let open = shared.handshake_frame(&conn.sid, &[]);
            conn.push(open);
            let ws = split(ws, shared.config.max_payload);
            shared.handler.on_open(&conn);
            drive(conn, Some(ws)).await;
        });
        response.map(|_| h::full(Bytes::new()))
    }

    fn websocket_upgrade<B>(
        &self,
        conn: Arc<Connection<H>>,
        req: &mut Request<B>,
        cors: &CorsHeaders,
        bare: &mut Option<Bare>,
    ) -> Response<Body> {
        let begun = lock(&conn.state).begin_upgrade();
        match begun {
            Ok(()) => {}
            Err(UpgradeError::Closed) => return h::bad_request(ErrorCode::UnknownSid, cors),
            // As the reference server does: the WebSocket is opened, then closed; the
            // session and its current transport are untouched.
            Err(_) => return self.accept_and_close(req, cors, bare),
        }
        let Ok((response, upgrade)) = fastwebsockets::upgrade::upgrade(req) else {
            lock(&conn.state).abort_upgrade();
            return h::bad_request(ErrorCode::BadRequest, cors);
        };
        let upgrading = Upgrading::new(upgrade, &response, bare, self.shared.config.ping_timeout);
        // A GET waiting on this session answers `noop` now that the client upgrades.
        conn.wake_poll.notify_one();
        let shared = Arc::clone(&self.shared);
        self.shared.tasks.spawn(async move {
            let Some(ws) = upgrading.open().await else {
                lock(&conn.state).abort_upgrade();
                return;
            };
            let mut ws = split(ws, shared.config.max_payload);
            let upgraded = tokio::time::timeout(
                shared.config.upgrade_timeout,
                probe(&conn, &mut ws.reader, &mut ws.writer),
            )
            .await
            .unwrap_or(false);
            if !upgraded {
                lock(&conn.state).abort_upgrade();
                let _ = ws
                    .writer
                    .write_frame(fastwebsockets::Frame::close(1000, b""))
                    .await;
                return;
            }
            // The session's driver (running since the polling handshake) takes the
            // socket over; this task ends.
            *lock(&conn.handoff) = Some(ws);
            conn.wake_driver.notify_one();
            conn.wake_poll.notify_one();
        });
        response.map(|_| h::full(Bytes::new()))
    }

    /// Answers a WebSocket request `101`, then closes the WebSocket at once: a second
    /// WebSocket for a session that is on WebSocket or upgrading already.
    fn accept_and_close<B>(
        &self,
        req: &mut Request<B>,
        cors: &CorsHeaders,
        bare: &mut Option<Bare>,
    ) -> Response<Body> {
        let Ok((response, upgrade)) = fastwebsockets::upgrade::upgrade(req) else {
            return h::bad_request(ErrorCode::BadRequest, cors);
        };
        let upgrading = Upgrading::new(upgrade, &response, bare, self.shared.config.ping_timeout);
        self.shared.tasks.spawn(async move {
            let Some(mut ws) = upgrading.open().await else {
                return;
            };
            let close = ws.write_frame(fastwebsockets::Frame::close(1000, b""));
            let _ = tokio::time::timeout(CLOSE_FRAME_LIMIT, close).await;
        });
        response.map(|_| h::full(Bytes::new()))
    }

    /// Stops accepting sessions, closes every open one in turn (a pending GET gets
    /// `close`, a WebSocket gets a close frame after its queued packets) so clients
    /// reconnect at once, and waits for the session tasks to finish.
    pub async fn shutdown(&self) {
        let sessions: Vec<_> = {
            let map = write_sessions(&self.shared);
            self.shared.closing.store(true, Ordering::Release);
            map.values().cloned().collect()
        };
        for conn in sessions {
            conn.close_with(CloseReason::ServerShutdown);
        }
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

fn read_sessions<H: EngineHandler>(
    shared: &Shared<H>,
) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<Connection<H>>>> {
    shared.sessions.read().unwrap_or_else(|p| p.into_inner())
}

fn write_sessions<H: EngineHandler>(
    shared: &Shared<H>,
) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<Connection<H>>>> {
    shared.sessions.write().unwrap_or_else(|p| p.into_inner())
}

impl<H: EngineHandler> Shared<H> {
    fn timing(&self) -> Timing {
        Timing {
            ping_interval: self.config.ping_interval,
            ping_timeout: self.config.ping_timeout,
            claim_timeout: self.claim_timeout,
            max_buffered: self.config.max_buffered_bytes,
        }
    }

    fn handshake_frame(&self, sid: &str, upgrades: &[&str]) -> Frame {
        Handshake {
            sid,
            upgrades,
            ping_interval: self.config.ping_interval.as_millis() as u64,
            ping_timeout: self.config.ping_timeout.as_millis() as u64,
            max_payload: self.config.max_payload,
        }
        .frame()
    }

    /// Registers a new session, or `None` while shutting down.
    fn create(self: &Arc<Self>, transport: Transport) -> Option<Arc<Connection<H>>> {
        let sid: Arc<str> = format!("{}{}", self.config.sid_prefix, random_id()).into();
        let conn = Arc::new(Connection {
            sid: Arc::clone(&sid),
            state: Mutex::new(SessionState::new(Instant::now(), transport, self.timing())),
            wake_driver: Notify::new(),
            wake_poll: Notify::new(),
            closed: CancellationToken::new(),
            handoff: Mutex::new(None),
            shared: Arc::clone(self),
            app: self.handler.new_state(),
        });
        let mut map = write_sessions(self);
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        map.insert(sid, Arc::clone(&conn));
        self.metrics.session_opened(transport);
        Some(conn)
    }
}

impl<H: EngineHandler> Connection<H> {
    /// The application's state for this session.
    pub fn app_state(&self) -> &H::State {
        &self.app
    }

    /// The transport the session currently uses.
    pub fn transport(&self) -> Transport {
        lock(&self.state).transport()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Queues a message. Returns false when the session is closed.
    pub fn send(&self, message: Message) -> bool {
        self.push(packet::message(message))
    }

    /// Closes the session from the server side.
    pub fn close(self: &Arc<Self>) {
        self.close_with(CloseReason::ServerClose);
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub(crate) fn push(&self, frame: Frame) -> bool {
        self.queue(|state| state.push(frame))
    }

    /// Queues an encoded Socket.IO packet and its attachments, contiguously.
    pub(crate) fn push_encoded(&self, encoded: &Encoded) -> bool {
        self.queue(|state| state.push_all(encoded.frames()))
    }

    /// Runs one push on the session's state, then wakes whoever sends its outbox. A
    /// push past `max_buffered_bytes` drops the outbox and wakes the driver, which
    /// closes the session. False when nothing was queued.
    fn queue(&self, push: impl FnOnce(&mut SessionState) -> Result<(), PushError>) -> bool {
        let mut state = lock(&self.state);
        let pushed = push(&mut state);
        let transport = state.transport();
        drop(state);
        match pushed {
            Ok(()) => {
                self.wake(transport);
                true
            }
            Err(PushError::Closed) => false,
            Err(PushError::Full) => {
                tracing::warn!(
                    sid = %self.sid,
                    max = self.shared.config.max_buffered_bytes,
                    "engine.io session closing: its client left more than max_buffered_bytes unread"
                );
                self.wake_driver.notify_one();
                false
            }
        }
    }

    fn wake(&self, transport: Transport) {
        match transport {
            Transport::WebSocket => self.wake_driver.notify_one(),
            Transport::Polling => self.wake_poll.notify_one(),
        }
    }

    /// The application took the session (a namespace was joined).
    pub(crate) fn claim(&self) {
        lock(&self.state).claim();
    }

    /// Ends the session once: unregisters it, stops its tasks, answers a pending GET,
    /// and tells the handler.
    pub(crate) fn close_with(self: &Arc<Self>, reason: CloseReason) {
        let transport = {
            let mut state = lock(&self.state);
            if !state.close(reason) {
                return;
            }
            state.transport()
        };
        write_sessions(&self.shared).remove(&self.sid);
        self.shared.metrics.session_closed(transport, reason);
        self.closed.cancel();
        self.wake_driver.notify_one();
        self.wake_poll.notify_one();
        tracing::debug!(reason = reason.as_str(), "engine.io session closed");
        self.shared.handler.on_close(self, reason);
    }

    /// Applies a packet from the client on the current transport; a gate holds the
    /// next one.
    fn receive(self: &Arc<Self>, packet: Packet) -> Result<Option<ReadGate>, CloseReason> {
        let is_pong = matches!(packet, Packet::Pong { probe: false });
        let message = lock(&self.state).receive(Instant::now(), packet)?;
        if is_pong {
            self.wake_driver.notify_one();
        }
        match message {
            Some(message) => self.shared.handler.on_message(self, message),
            None => Ok(None),
        }
    }
}

/// Clears the in-flight flag of a polling request however it ends (answered, or
/// dropped because the client went away).
struct InFlight<'a, H: EngineHandler> {
    conn: &'a Connection<H>,
    get: bool,
}

impl<H: EngineHandler> Drop for InFlight<'_, H> {
    fn drop(&mut self) {
        let mut state = lock(&self.conn.state);
        if self.get {
            state.end_get();
        } else {
            state.end_post();
        }
    }
}

fn poll_error<H: EngineHandler>(
    conn: &Arc<Connection<H>>,
    error: PollError,
    cors: &CorsHeaders,
) -> Response<Body> {
    match error {
        PollError::Closed => h::bad_request(ErrorCode::UnknownSid, cors),
        PollError::Upgraded => h::bad_request(ErrorCode::BadRequest, cors),
        PollError::Overlap => {
            conn.close_with(CloseReason::TransportError);
            h::bad_request(ErrorCode::BadRequest, cors)
        }
    }
}

async fn poll<H: EngineHandler>(conn: Arc<Connection<H>>, cors: &CorsHeaders) -> Response<Body> {
    let begun = lock(&conn.state).begin_get();
    if let Err(error) = begun {
        return poll_error(&conn, error, cors);
    }
    let _in_flight = InFlight {
        conn: &conn,
        get: true,
    };
    loop {
        let notified = conn.wake_poll.notified();
        let frames = lock(&conn.state).take_poll();
        match frames {
            Some(frames) if frames.is_empty() => {
                return h::bad_request(ErrorCode::UnknownSid, cors);
            }
            Some(frames) => return h::text(packet::encode_payload(&frames), cors),
            None => notified.await,
        }
    }
}

async fn post<H, B>(conn: Arc<Connection<H>>, body: B, cors: &CorsHeaders) -> Response<Body>
where
    H: EngineHandler,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let begun = lock(&conn.state).begin_post();
    if let Err(error) = begun {
        return poll_error(&conn, error, cors);
    }
    let _in_flight = InFlight {
        conn: &conn,
        get: false,
    };
    let limit = usize::try_from(conn.shared.config.max_payload).unwrap_or(usize::MAX);
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                conn.close_with(CloseReason::PayloadTooLarge);
                return h::error(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BadRequest, cors);
            }
            conn.close_with(CloseReason::TransportError);
            return h::bad_request(ErrorCode::BadRequest, cors);
        }
    };
    let packets = match packet::decode_payload(body) {
        Ok(packets) => packets,
        Err(_) => {
            conn.close_with(CloseReason::ParseError);
            return h::bad_request(ErrorCode::BadRequest, cors);
        }
    };
    for packet in packets {
        match conn.receive(packet) {
            Ok(None) => {}
            Ok(Some(gate)) => {
                tokio::select! {
                    () = gate => {}
                    () = conn.closed.cancelled() => break,
                }
            }
            Err(reason) => {
                conn.close_with(reason);
                if reason == CloseReason::ClientClose {
                    break;
                }
                return h::bad_request(ErrorCode::BadRequest, cors);
            }
        }
    }
    h::text(Bytes::from_static(b"ok"), cors)
}

/// The byte stream under a session's WebSocket.
enum Io {
    /// A connection hyper served, then upgraded.
    Upgraded(TokioIo<Upgraded>),
    /// A connection whose request the application read itself
    /// ([`EngineServer::handle_websocket`]).
    Tcp(TcpStream),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
            Io::Tcp(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
            Io::Tcp(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Io::Tcp(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Upgraded(io) => io.is_write_vectored(),
            Io::Tcp(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Upgraded(io) => Pin::new(io).poll_flush(cx),
            Io::Tcp(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
            Io::Tcp(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
}

/// A connection whose request the application read itself, and the headers it adds to
/// the answer.
struct Bare {
    stream: TcpStream,
    headers: HeaderMap,
}

/// Where the socket of a WebSocket request answered `101` comes from.
enum Upgrading {
    /// hyper writes the answer, then hands over the upgraded connection.
    Hyper(fastwebsockets::upgrade::UpgradeFut),
    /// The caller's connection: the answer's head is written on it here, within
    /// `limit`.
    Bare {
        stream: TcpStream,
        head: Vec<u8>,
        limit: Duration,
    },
}

impl Upgrading {
    fn new<T>(
        upgrade: fastwebsockets::upgrade::UpgradeFut,
        response: &Response<T>,
        bare: &mut Option<Bare>,
        limit: Duration,
    ) -> Upgrading {
        match bare.take() {
            Some(Bare { stream, headers }) => Upgrading::Bare {
                stream,
                head: response_head(response.status(), [response.headers(), &headers]),
                limit,
            },
            None => Upgrading::Hyper(upgrade),
        }
    }

    async fn open(self) -> Option<fastwebsockets::WebSocket<Io>> {
        let io = match self {
            Upgrading::Hyper(upgrade) => Io::Upgraded(upgrade.await.ok()?.into_inner()),
            Upgrading::Bare {
                mut stream,
                head,
                limit,
            } => {
                tokio::time::timeout(limit, stream.write_all(&head))
                    .await
                    .ok()?
                    .ok()?;
                // Frames are small and latency-bound.
                let _ = stream.set_nodelay(true);
                Io::Tcp(stream)
            }
        };
        Some(fastwebsockets::WebSocket::after_handshake(
            io,
            fastwebsockets::Role::Server,
        ))
    }
}

/// The HTTP/1.1 head of a response with `status` and the headers of each map in turn.
fn response_head(status: StatusCode, headers: [&HeaderMap; 2]) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers.into_iter().flatten() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes a refused WebSocket request's answer whole, with `extra` headers, then closes
/// the connection.
async fn write_refusal(
    stream: &mut TcpStream,
    response: Response<Body>,
    extra: HeaderMap,
) -> io::Result<()> {
    let (mut head, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    head.headers
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    if let Ok(date) = http::HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        head.headers.insert(http::header::DATE, date);
    }
    head.headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    stream
        .write_all(&response_head(head.status, [&head.headers, &extra]))
        .await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// A session's WebSocket: both halves, for its driver. Passed around boxed: an async
/// fn keeps its arguments in its future for as long as it runs, so each unboxed hand-over
/// would keep another copy of these in the session's task for the socket's life.
struct Ws {
    reader: WsReader,
    writer: WsWriter,
}

fn split(mut ws: fastwebsockets::WebSocket<Io>, max_payload: u64) -> Box<Ws> {
    // Every frame with a payload goes out as one `writev` of its head and payload.
    // Below the threshold fastwebsockets copies a frame into a buffer of the writer's
    // that keeps the size of the largest such frame for the socket's whole life.
    ws.set_writev_threshold(0);
    let (mut reader, writer) = ws.split(tokio::io::split);
    // Control frames are handled here (a close ends the session; pings are not
    // answered at the WebSocket level, Engine.IO has its own heartbeat).
    reader.set_auto_close(false);
    reader.set_auto_pong(false);
    let max = usize::try_from(max_payload)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    reader.set_max_message_size(max);
    Box::new(Ws { reader, writer })
}

async fn no_obligated_send(_frame: fastwebsockets::Frame<'_>) -> Result<(), Infallible> {
    Ok(())
}

fn payload_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(bytes) => bytes.freeze(),
        Payload::Owned(vec) => Bytes::from(vec),
        other => Bytes::copy_from_slice(&other),
    }
}

fn read_error_reason(error: &WebSocketError) -> CloseReason {
    match error {
        WebSocketError::UnexpectedEOF | WebSocketError::IoError(_) => CloseReason::TransportClose,
        WebSocketError::FrameTooLarge => CloseReason::PayloadTooLarge,
        _ => CloseReason::TransportError,
    }
}

/// Reads the probing WebSocket of an upgrade until `5` (true) or anything else (false).
async fn probe<H: EngineHandler>(
    conn: &Arc<Connection<H>>,
    reader: &mut WsReader,
    writer: &mut WsWriter,
) -> bool {
    let mut send = no_obligated_send;
    loop {
        let frame = tokio::select! {
            frame = reader.read_frame(&mut send) => frame,
            _ = conn.closed.cancelled() => return false,
        };
        let Ok(frame) = frame else { return false };
        if frame.opcode != OpCode::Text || !frame.fin {
            return false;
        }
        let Ok(packet) = packet::decode_text(payload_bytes(frame.payload)) else {
            return false;
        };
        let answer = {
            let mut state = lock(&conn.state);
            let answer = state.probe_packet(&packet);
            if matches!(answer, Ok(None)) {
                conn.shared.metrics.session_upgraded();
            }
            answer
        };
        match answer {
            Ok(Some(Frame::Text(reply))) => {
                let frame = fastwebsockets::Frame::text(Payload::Borrowed(&reply));
                if writer.write_frame(frame).await.is_err() {
                    return false;
                }
                conn.wake_poll.notify_one();
            }
            Ok(None) => return true,
            Ok(Some(Frame::Binary(_))) | Err(_) => return false,
        }
    }
}

/// A WebSocket message being reassembled from fragments.
type Fragments = Option<(OpCode, BytesMut)>;

/// One frame read off a session's WebSocket, owned.
struct Received {
    opcode: OpCode,
    fin: bool,
    payload: Bytes,
}

/// Reads the next frame. It owns the reader, and hands it back, so that the driver can
/// keep this future across its loop.
async fn next_frame(mut reader: WsReader) -> (WsReader, Result<Received, CloseReason>) {
    let mut send = no_obligated_send;
    let frame = match reader.read_frame(&mut send).await {
        Ok(frame) => Ok(Received {
            opcode: frame.opcode,
            fin: frame.fin,
            payload: payload_bytes(frame.payload),
        }),
        Err(error) => Err(read_error_reason(&error)),
    };
    (reader, frame)
}

/// One frame read from a session's WebSocket, into the session. `Err` ends the session
/// with that reason; a gate holds the next read.
fn on_frame<H: EngineHandler>(
    conn: &Arc<Connection<H>>,
    fragments: &mut Fragments,
    frame: Received,
) -> Result<Option<ReadGate>, CloseReason> {
    let (opcode, payload) = match frame.opcode {
        OpCode::Text | OpCode::Binary if fragments.is_none() => {
            if frame.fin {
                (frame.opcode, frame.payload)
            } else {
                *fragments = Some((frame.opcode, BytesMut::from(&frame.payload[..])));
                return Ok(None);
            }
        }
        OpCode::Continuation if fragments.is_some() => {
            let Some((opcode, mut buf)) = fragments.take() else {
                return Ok(None);
            };
            buf.extend_from_slice(&frame.payload);
            let max = usize::try_from(conn.shared.config.max_payload).unwrap_or(usize::MAX);
            if buf.len() > max {
                return Err(CloseReason::PayloadTooLarge);
            }
            if !frame.fin {
                *fragments = Some((opcode, buf));
                return Ok(None);
            }
            (opcode, buf.freeze())
        }
        OpCode::Close => return Err(CloseReason::TransportClose),
        OpCode::Ping | OpCode::Pong => return Ok(None),
        OpCode::Text | OpCode::Binary | OpCode::Continuation => {
            return Err(CloseReason::TransportError)
        }
    };
    let packet = if opcode == OpCode::Text {
        packet::decode_text(payload).map_err(|_| CloseReason::ParseError)?
    } else {
        Packet::Message(Message::Binary(payload))
    };
    conn.receive(packet)
}

async fn write_batch(
    writer: &mut WsWriter,
    batch: &mut VecDeque<Frame>,
) -> Result<(), WebSocketError> {
    while let Some(frame) = batch.pop_front() {
        let frame = match &frame {
            Frame::Text(bytes) => fastwebsockets::Frame::text(Payload::Borrowed(bytes)),
            Frame::Binary(bytes) => fastwebsockets::Frame::binary(Payload::Borrowed(bytes)),
        };
        writer.write_frame(frame).await?;
    }
    Ok(())
}

/// How long the final close frame may take to write.
const CLOSE_FRAME_LIMIT: Duration = Duration::from_secs(1);

/// The session's driver: the heartbeat timer, and once the session is on WebSocket the
/// socket, both ways.
async fn drive<H: EngineHandler>(conn: Arc<Connection<H>>, ws: Option<Box<Ws>>) {
    let ws = match ws {
        Some(ws) => ws,
        None => match drive_polling(&conn).await {
            Some(ws) => ws,
            None => return,
        },
    };
    drive_websocket(&conn, ws).await;
}

/// A long-polling session's heartbeat (its pending GET carries the pings), until the
/// session ends (`None`) or an upgrade hands over its WebSocket.
async fn drive_polling<H: EngineHandler>(conn: &Arc<Connection<H>>) -> Option<Box<Ws>> {
    loop {
        let notified = conn.wake_driver.notified();
        let deadline = {
            let state = lock(&conn.state);
            // Taken even if the session just closed: it then gets its close frame.
            if state.transport() == Transport::WebSocket {
                if let Some(ws) = lock(&conn.handoff).take() {
                    return Some(ws);
                }
            }
            if state.is_closed() {
                return None;
            }
            if state.overflowed() {
                drop(state);
                conn.close_with(CloseReason::BufferFull);
                return None;
            }
            state.deadline()
        };
        tokio::select! {
            _ = until(deadline) => on_deadline(conn),
            _ = notified => {}
        }
    }
}

/// A WebSocket session: frames in, the outbox out, the heartbeat, until the session ends.
///
/// The read of the next frame is one future kept across the loop, so a wake-up to write
/// does not touch the read side; a frame that arrives while a batch is written waits in
/// the socket until the write is done.
async fn drive_websocket<H: EngineHandler>(conn: &Arc<Connection<H>>, ws: Box<Ws>) {
    let write_limit = conn.shared.config.ping_interval + conn.shared.config.ping_timeout;
    // Unboxed in a call of its own, so that the box is freed now, not when this
    // function returns.
    let Ws { reader, mut writer } = unbox(ws);
    let mut read = std::pin::pin!(next_frame(reader));
    let mut fragments: Fragments = None;
    let mut batch = VecDeque::new();
    // While the application holds the next packet, the read future is not polled: the
    // client's frames wait in the socket, and TCP slows the client down.
    let mut gate: Option<ReadGate> = None;
    loop {
        let notified = conn.wake_driver.notified();
        let (deadline, closed) = {
            let mut state = lock(&conn.state);
            if state.overflowed() {
                drop(state);
                conn.close_with(CloseReason::BufferFull);
                state = lock(&conn.state);
            }
            state.drain_into(&mut batch);
            (state.deadline(), state.is_closed())
        };
        if !batch.is_empty() {
            // A peer that stops reading must not stall the heartbeat forever: a batch
            // that cannot be written within one heartbeat period ends the session.
            // Boxed: the write future is several times the size of the rest of this
            // task, and a task is as large as its largest await point for its whole
            // life, though most sessions spend it idle.
            let written = Box::pin(tokio::time::timeout(
                write_limit,
                write_batch(&mut writer, &mut batch),
            ))
            .await;
            if !matches!(written, Ok(Ok(()))) {
                conn.close_with(CloseReason::TransportError);
                return;
            }
            // Freed, not kept: between bursts a session holds no queue memory (the
            // outbox it was swapped with is unallocated too, see `drain_into`).
            batch = VecDeque::new();
        }
        if closed {
            let close = writer.write_frame(fastwebsockets::Frame::close(1000, b""));
            let _ = Box::pin(tokio::time::timeout(CLOSE_FRAME_LIMIT, close)).await;
            return;
        }
        tokio::select! {
            (reader, frame) = &mut read, if gate.is_none() => {
                // Set before anything else: a finished read is never polled again.
                read.set(next_frame(reader));
                match frame.and_then(|f| on_frame(conn, &mut fragments, f)) {
                    Ok(held) => gate = held,
                    Err(reason) => conn.close_with(reason),
                }
            }
            () = async { if let Some(g) = gate.as_mut() { g.await } }, if gate.is_some() => {
                gate = None;
            }
            _ = until(deadline) => on_deadline(conn),
            _ = notified => {}
        }
    }
}

#[expect(
    clippy::boxed_local,
    reason = "taking the box by value is the point: it is freed on return"
)]
fn unbox(ws: Box<Ws>) -> Ws {
    *ws
}

/// Resolves at `deadline`, or never.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The heartbeat deadline passed: a ping is due (a pending GET takes it), or the session
/// ends.
fn on_deadline<H: EngineHandler>(conn: &Arc<Connection<H>>) {
    let (reason, transport) = {
        let mut state = lock(&conn.state);
        (state.on_timer(Instant::now()), state.transport())
    };
    match reason {
        Some(reason) => conn.close_with(reason),
        None if transport == Transport::Polling => conn.wake_poll.notify_one(),
        None => {}
    }
}
