//! Engine.IO v4: the packet codec and session state machine (sans IO), the HTTP
//! vocabulary, and the IO layer that serves long-polling over hyper and WebSocket over
//! fastwebsockets.

pub(crate) mod http;
pub mod packet;
pub(crate) mod server;
pub mod session;

pub use self::http::Body;
pub use self::packet::Message;
pub use self::server::{Connection, EngineHandler, EngineServer, ReadGate};
pub use self::session::{CloseReason, Transport, PACKET_OVERHEAD};
