//! What the request path reads that a reload may change, behind one atomic pointer:
//! every listener, server and background check reads it from here, and only
//! [`crate::reload`] swaps it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::acme::Challenges;
use crate::assets::Store;
use crate::config::Settings;

/// Everything the request path reads that a reload may change.
#[derive(Debug)]
pub struct Snapshot {
    pub settings: Arc<Settings>,
    pub store: Arc<Store>,
    /// The body of `GET /config.json`: the settings' client configuration and the
    /// static files' version (`assetsVersion`).
    pub client_config: Bytes,
    /// The ACME client's answers to HTTP-01 checks; the same for the process's life.
    pub challenges: Arc<Challenges>,
}

impl Snapshot {
    pub fn new(
        settings: Arc<Settings>,
        store: Arc<Store>,
        challenges: Arc<Challenges>,
    ) -> Snapshot {
        let mut doc = settings.client_config.clone();
        doc.insert("assetsVersion".into(), store.version().into());
        let client_config = Bytes::from(serde_json::Value::Object(doc).to_string());
        Snapshot {
            settings,
            store,
            client_config,
            challenges,
        }
    }
}

/// The current snapshot, shared by the proxy, the listeners and the health checks.
pub type Live = Arc<ArcSwap<Snapshot>>;

/// Wrap the snapshot the gateway starts with.
pub fn live(settings: Arc<Settings>, store: Arc<Store>, challenges: Arc<Challenges>) -> Live {
    Arc::new(ArcSwap::from_pointee(Snapshot::new(
        settings, store, challenges,
    )))
}
