//! The thin servers that act on the edge's decision: replies the gateway makes itself
//! ([`reply`]), requests forwarded to a worker ([`api`]), WebSocket upgrades handed over
//! or relayed ([`upgrade`], [`relay`]), and HTTP/2 streams, read by Pingora's HTTP/2
//! server and served with the same decision, replies and forwarding ([`h2`]).

pub mod api;
pub mod h2;
pub mod relay;
pub mod reply;
pub mod upgrade;
