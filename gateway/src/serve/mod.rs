//! The thin servers that act on the edge's decision: replies the gateway makes itself
//! ([`reply`]), requests forwarded to a worker ([`api`]), WebSocket upgrades handed over
//! or relayed ([`upgrade`], [`relay`]), and HTTP/2 through Pingora ([`h2`]).

pub mod api;
pub mod h2;
pub mod relay;
pub mod reply;
pub mod upgrade;
