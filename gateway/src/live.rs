//! What the request path reads that a reload may change, behind one atomic pointer:
//! every listener, server and background check reads it from here, and only
//! [`crate::reload`] swaps it.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::assets::Store;
use crate::config::Settings;

/// Everything the request path reads that a reload may change.
#[derive(Debug)]
pub struct Snapshot {
    pub settings: Arc<Settings>,
    pub store: Arc<Store>,
}

/// The current snapshot, shared by the proxy, the listeners and the health checks.
pub type Live = Arc<ArcSwap<Snapshot>>;

/// Wrap the snapshot the gateway starts with.
pub fn live(settings: Arc<Settings>, store: Arc<Store>) -> Live {
    Arc::new(ArcSwap::from_pointee(Snapshot { settings, store }))
}
