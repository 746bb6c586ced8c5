//! The task's view of the source's collections while it reads: etcd, cached.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::{info, warn};

use super::{CollectionMeta, MetaError, SourceMeta};
use crate::source::capture::{CollectionLookup, LookupError};

/// Collection metadata from the source's etcd, cached. A collection's metadata may land in etcd
/// a little after its first message, so a miss is retried briefly before it is remembered; a
/// read that fails (etcd down or silent) or does not read is an error, never remembered; a
/// collection of a dropped database counts as none. A collection the metadata has none of is
/// placed in its database by the metadata's history ([`SourceMeta::database_in_history`]).
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
                // A collection whose database was dropped with it: it is gone, and its
                // changes find their database in the metadata's history.
                Err(e @ MetaError::UnknownDatabase { .. }) => {
                    warn!(id, err = %e, "collection of a dropped database");
                    None
                }
                // A failed read is not an answer, nor is one that does not read (a value that
                // does not decode, metadata that contradicts itself): the caller waits, the
                // reason shown, and asks again. Taking it for "none" would route rows by guess.
                Err(e) => return Err(LookupError(format!("collection {id}: {e}"))),
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

    fn database_at(&mut self, id: i64, ts: u64) -> Result<Option<String>, LookupError> {
        let found = self
            .runtime
            .block_on(self.meta.database_in_history(id, ts))
            .map_err(|e| LookupError(format!("the database of collection {id}: {e}")))?;
        info!(id, database = ?found, "database of a collection gone from the metadata, from its history");
        Ok(found)
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
