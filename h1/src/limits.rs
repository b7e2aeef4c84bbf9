//! The sizes both sides of a hand-over agree on: the gateway reads a client's head within
//! these, adds its forwarding headers, and gives the head to an API worker, which must
//! accept anything the gateway accepted (an upgrade it dropped would leave the client
//! with no status line at all).

/// Most header fields in a client's request head; more is 431.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// Header fields the gateway adds to a head it forwards (`x-forwarded-for`,
/// `x-forwarded-proto`, `x-forwarded-host`, `x-request-id`).
pub const FORWARDING_HEADERS: usize = 4;

/// Most header fields in a head the gateway forwards or hands over: what a worker must
/// accept.
pub const MAX_FORWARDED_HEADERS: usize = MAX_REQUEST_HEADERS + FORWARDING_HEADERS;

/// The largest request head a gateway may be configured to accept
/// (`gateway.max_header_bytes`); a worker accepts a forwarded head up to this plus what
/// the forwarding headers add.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Room for the forwarding headers on top of a client's head.
pub const FORWARDING_BYTES: usize = 1024;

/// Most header fields in a worker's response head.
pub const MAX_RESPONSE_HEADERS: usize = 100;

/// The largest response head read from a worker.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
