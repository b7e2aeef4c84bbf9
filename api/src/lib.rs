//! `btp-api`: the internal API process — accounts, BTP projects, the sync engine, the
//! storage it runs on (SQLite or PostgreSQL), and the change bus the realtime layer
//! broadcasts from.
//!
//! The tree follows a request: [`http`] (routes, extractors) → [`auth`] / [`sync`]
//! (decisions, pure where they can be) → [`store`] (SQL, transactions) → [`bus`]
//! (committed batches out). [`state`] opens it all once per process and [`server`]
//! runs it. The protocol is documented in docs/SYNC.md, the routes in docs/API.md.

pub mod auth;
pub mod bus;
pub mod error;
pub mod http;
pub mod metrics;
pub mod project;
pub mod realtime;
pub mod server;
pub mod state;
pub mod store;
pub mod sync;

pub use bus::{Bus, ChangeBatch};
pub use error::ApiError;
pub use server::{app, run, run_with, serve, Inbound, Launch};
pub use state::{AppState, Options};
