//! Server settings: heartbeat, limits, the Socket.IO connect timeout, CORS, the sid
//! prefix that lets a gateway route long-polling requests back to this process, and the
//! request path.

use std::time::Duration;

/// Cross-origin policy for long-polling responses (WebSocket is not subject to CORS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// `Access-Control-Allow-Origin: *`, never with credentials.
    Any,
    /// Reflect the request's `Origin` when it is one of these exactly (`"null"` included
    /// only when listed), with `Access-Control-Allow-Credentials: true`; other origins
    /// get no CORS headers.
    Origins(Vec<String>),
}

/// Settings of a [`crate::Server`] or [`crate::EngineServer`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The server pings this often; the first ping goes out one interval after the
    /// handshake.
    pub ping_interval: Duration,
    /// The session closes when a pong does not arrive within this time of a ping.
    pub ping_timeout: Duration,
    /// Largest accepted polling POST body or WebSocket message, in bytes; also bounds
    /// the attachments of one binary Socket.IO packet together.
    pub max_payload: u64,
    /// Socket.IO only: the Engine.IO session closes if no namespace is joined in time.
    pub connect_timeout: Duration,
    /// A WebSocket opened to upgrade a polling session must finish the upgrade in time.
    pub upgrade_timeout: Duration,
    /// Most bytes of packets queued for one session's client; a session whose client
    /// lets more pile up unread is closed ([`crate::CloseReason::BufferFull`]). A packet
    /// is always accepted when nothing is queued, so one larger answer still goes out.
    pub max_buffered_bytes: usize,
    /// Socket.IO only: most event handlers running at once for one socket. The next
    /// event of that socket waits (and its session reads nothing more meanwhile); other
    /// sockets are not held up.
    pub max_inflight_events: usize,
    pub cors: Cors,
    /// Every Engine.IO sid starts with this (the API worker's two hex digits).
    pub sid_prefix: String,
    /// Request path the server answers, with leading and trailing slash.
    pub path: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(60_000),
            max_payload: 1_000_000,
            connect_timeout: Duration::from_millis(45_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_buffered_bytes: 1 << 20,
            max_inflight_events: 16,
            cors: Cors::Origins(Vec::new()),
            sid_prefix: String::new(),
            path: "/socket.io/".to_owned(),
        }
    }
}
