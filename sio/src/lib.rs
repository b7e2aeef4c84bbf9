//! # btp-sio — an Engine.IO v4 / Socket.IO v5 server
//!
//! Unchanged `socket.io-client` 4.x browsers and apps connect to it over WebSocket,
//! HTTP long-polling, or polling upgraded to WebSocket.
//!
//! The crate has two layers:
//!
//! * a **sans-IO core** — [`engine::packet`] and [`socketio::packet`] (codecs),
//!   [`engine::session`] (the Engine.IO state machine: heartbeat, polling rules, upgrade,
//!   connect timeout) and [`socketio::assemble`] (binary packets with attachments). Bytes
//!   and events in, bytes and events out, time passed as an argument;
//! * a **thin IO layer** — hyper 1 for long-polling and fastwebsockets for WebSocket
//!   (upgraded through hyper, or taken straight off a connection's first bytes with
//!   [`sniff`]). One task per session: the heartbeat, and on WebSocket both directions.
//!
//! ## Using it
//!
//! Build a [`Server`] with one [`Namespace`] per namespace, then hand every request whose
//! path is under [`Config::path`] (default `/socket.io/`) to [`Server::handle`] from a
//! hyper or axum service (the connection must be served `with_upgrades()`). A server
//! that accepts its own connections can also [`sniff::sniff`] each one first and give
//! one that opens with a WebSocket request to [`Server::handle_websocket`]: such a socket
//! then keeps nothing of hyper for its life.
//!
//! ```no_run
//! use btp_sio::{Args, Config, ConnectError, Namespace, Server};
//!
//! struct User { id: i64, client_session_id: String }
//!
//! # async fn check_token(_: &str) -> Option<i64> { Some(42) }
//! # async fn example() {
//! let server: Server<User> = Server::builder(Config::default())
//!     .namespace("/", Namespace::new(|handshake| async move {
//!         // Runs as its own task: a database lookup here blocks nothing else.
//!         let token = handshake.auth["token"].as_str().unwrap_or_default().to_owned();
//!         let csid = handshake.auth["clientSessionId"].as_str().unwrap_or_default().to_owned();
//!         match check_token(&token).await {
//!             Some(id) => Ok(User { id, client_session_id: csid }),
//!             None => Err(ConnectError::new("unauthorized")),
//!         }
//!     })
//!     .on_connection(|socket| socket.join(&format!("user:{}", socket.data().id)))
//!     .on("sync:pull", |socket, event| async move {
//!         let body: serde_json::Value = event.args.get(0).unwrap_or_default();
//!         let reply = serde_json::json!({ "echo": body, "user": socket.data().id });
//!         if let (Some(ack), Ok(args)) = (event.ack, Args::one(&reply)) {
//!             let _ = ack.send(&args);
//!         }
//!     }))
//!     .build();
//!
//! // Fan a change out to a user's other sessions, never to the one that made it.
//! let change = Args::one(&serde_json::json!({ "from": 1, "to": 2, "changes": [] })).unwrap();
//! let origin = "session-a";
//! server.broadcast("/", Some("user:42"), "sync:changes", &change, |s| {
//!     s.data().client_session_id == origin
//! });
//!
//! // In the hyper/axum service: `server.handle(request).await` for `/socket.io/` paths.
//! // On SIGTERM: `server.shutdown().await` closes every session so clients reconnect.
//! # }
//! ```
//!
//! Per-socket typed data (`D`) is whatever the namespace's auth callback returns. Event
//! arguments are [`Args`]: raw JSON values plus binary attachments, deserialized on
//! demand with [`Args::get`]. Counters for monitoring come from [`Server::metrics`].
//!
//! ## Protocol choices worth knowing
//!
//! * The first ping goes out one `ping_interval` after the handshake, the next one
//!   `ping_interval` after each pong; no pong within `ping_timeout` closes the session.
//! * A client ping, a malformed packet, an oversized payload or a second concurrent
//!   polling GET/POST closes that session only.
//! * What one client can make the server hold is bounded: bytes queued for it
//!   ([`Config::max_buffered_bytes`], else the session closes with "buffer full"),
//!   handlers running for one socket ([`Config::max_inflight_events`], else its next
//!   event waits and its session reads nothing more), and auth decisions (one per
//!   namespace and session: a repeated CONNECT never reaches the auth callback).
//! * A second WebSocket for a session that is on WebSocket or upgrading is answered
//!   `101` and closed at once, as by the reference server.
//! * Engine.IO sids start with [`Config::sid_prefix`] and never leave the session they
//!   belong to; Socket.IO socket ids are separate random ids.
//! * [`Server::shutdown`] sends Engine.IO `close` (not Socket.IO DISCONNECT, which would
//!   stop the client's automatic reconnection).
//!
//! [`harness`] is the standard protocol test-suite setup (`examples/echo.rs` serves it).

pub mod args;
pub mod config;
pub mod engine;
pub mod harness;
mod metrics;
mod server;
pub mod sniff;
mod socket;
pub mod socketio;

pub use crate::args::{ArgError, Args};
pub use crate::config::{Config, Cors};
pub use crate::engine::{
    Body, CloseReason, Connection, EngineHandler, EngineServer, Message, ReadGate, Transport,
};
pub use crate::metrics::MetricsSnapshot;
pub use crate::server::{Namespace, Server, ServerBuilder};
pub use crate::socket::{
    AckError, AckFuture, AckSender, ConnectError, DisconnectReason, Disconnected, Event, Handshake,
    Socket,
};
