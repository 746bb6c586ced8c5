//! The task's view of the source's collections while it reads: etcd, cached.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::{info, warn};

use super::{CollectionMeta, SourceMeta};
use crate::source::capture::{CollectionLookup, LookupError};

/// Collection metadata from the source's etcd, cached. A collection's metadata may land in etcd
/// a little after its first message, so a miss is retried briefly before it is remembered; a
/// read that fails (etcd down or silent) is an error, never remembered; metadata etcd does hold
/// but that names no usable collection counts as none.
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
    fn collection(&mut self, id: i64) -> Result<Option<CollectionMeta>, LookupError> {
        if let Some(found) = self.cache.get(&id) {
            return Ok(Some(found.clone()));
        }
        if self.missing.contains(&id) {
            return Ok(None);
        }
        for _ in 0..10 {
            let read = match self.runtime.block_on(self.meta.collection(id)) {
                Ok(read) => read,
                // A failed read is not an answer: the caller waits and asks again.
                Err(e) if e.is_unavailable() => {
                    return Err(LookupError(format!("collection {id}: {e}")));
                }
                // An answer that names no usable collection (one of a dropped database, say).
                Err(e) => {
                    warn!(id, err = %e, "collection metadata unusable");
                    None
                }
            };
            if let Some(found) = read {
                info!(collection = %found.name, id, "collection metadata loaded");
                self.cache.insert(id, found.clone());
                return Ok(Some(found));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // etcd answered, ten times over two seconds, that it has no such collection.
        self.missing.insert(id);
        Ok(None)
    }

    fn collection_named(
        &mut self,
        db_name: &str,
        name: &str,
    ) -> Result<Option<CollectionMeta>, LookupError> {
        // Not cached: a name may be dropped and reused at any time, and these events are rare.
        let found = match self
            .runtime
            .block_on(self.meta.collection_named(db_name, name))
        {
            Ok(found) => found,
            Err(e) if e.is_unavailable() => {
                return Err(LookupError(format!("collection {db_name}.{name}: {e}")));
            }
            Err(e) => {
                warn!(collection = name, database = db_name, err = %e, "collection metadata unusable");
                None
            }
        };
        if let Some(found) = &found {
            self.cache.insert(found.id, found.clone());
        }
        Ok(found)
    }
}
