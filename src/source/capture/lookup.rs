//! What capture asks of the source's metadata, and a map of collections that answers it from
//! memory.

use std::collections::HashMap;

use crate::model::db_or_default;
use crate::source::meta::CollectionMeta;

/// What the task knows of the source's collections, by id (and by name for replicate-msg
/// events, which carry no id). `Ok(None)` is an answer (no such collection); an error is the
/// absence of one, and is never taken for "not found".
pub trait CollectionLookup {
    fn collection(&mut self, id: i64) -> Result<Option<CollectionMeta>, LookupError>;
    /// The live collection of that name in that database (`""` is the default database).
    fn collection_named(
        &mut self,
        db_name: &str,
        name: &str,
    ) -> Result<Option<CollectionMeta>, LookupError>;
    /// The vchannels of a collection the task has staged rows of: what stands for its
    /// metadata once Milvus has removed that (a drop finished long before the task read it).
    fn vchannels_seen(&mut self, _id: i64) -> Result<Vec<String>, LookupError> {
        Ok(Vec::new())
    }
    /// The database collection `id` was in at source time `ts`, for a collection the metadata
    /// no longer has (from what Milvus keeps of it a while after its drop); None when nothing
    /// says.
    fn database_at(&mut self, _id: i64, _ts: u64) -> Result<Option<String>, LookupError> {
        Ok(None)
    }
}

/// The source's metadata could not be read: the message that needed it must wait.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("cannot read the source's metadata: {0}")]
pub struct LookupError(pub String);

impl CollectionLookup for HashMap<i64, CollectionMeta> {
    fn collection(&mut self, id: i64) -> Result<Option<CollectionMeta>, LookupError> {
        Ok(self.get(&id).cloned())
    }

    fn collection_named(
        &mut self,
        db_name: &str,
        name: &str,
    ) -> Result<Option<CollectionMeta>, LookupError> {
        let db_name = db_or_default(db_name);
        Ok(self
            .values()
            .find(|c| c.db_name == db_name && c.name == name)
            .cloned())
    }
}
