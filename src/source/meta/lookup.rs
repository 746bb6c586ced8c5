//! The task's view of the source's collections while it reads: etcd, cached.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::{info, warn};

use super::{CollectionMeta, SourceMeta};
use crate::source::capture::CollectionLookup;

/// Collection metadata from the source's etcd, cached. A collection's metadata may land in etcd
/// a little after its first message, so a miss is retried briefly before it is remembered.
pub struct EtcdLookup {
    meta: SourceMeta,
    runtime: Handle,
    cache: HashMap<i64, CollectionMeta>,
    missing: HashSet<i64>,
}

impl EtcdLookup {
    pub fn new(meta: SourceMeta, runtime: Handle) -> Self {
        Self {
            meta,
            runtime,
            cache: HashMap::new(),
            missing: HashSet::new(),
        }
    }
}

impl CollectionLookup for EtcdLookup {
    fn collection(&mut self, id: i64) -> Option<CollectionMeta> {
        if let Some(found) = self.cache.get(&id) {
            return Some(found.clone());
        }
        if self.missing.contains(&id) {
            return None;
        }
        for _ in 0..10 {
            match self.runtime.block_on(self.meta.collection(id)) {
                Ok(Some(found)) => {
                    info!(collection = %found.name, id, "collection metadata loaded");
                    self.cache.insert(id, found.clone());
                    return Some(found);
                }
                Ok(None) => {}
                Err(err) => warn!(%err, id, "cannot read collection metadata"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.missing.insert(id);
        None
    }

    fn collection_named(&mut self, db_name: &str, name: &str) -> Option<CollectionMeta> {
        // Not cached: a name may be dropped and reused at any time, and these events are rare.
        // The collection exists before any operation on it is written, so only an etcd fault
        // is retried.
        for _ in 0..10 {
            match self
                .runtime
                .block_on(self.meta.collection_named(db_name, name))
            {
                Ok(found) => {
                    if let Some(found) = &found {
                        self.cache.insert(found.id, found.clone());
                    }
                    return found;
                }
                Err(err) => warn!(%err, collection = name, database = db_name,
                    "cannot read collection metadata"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}
