//! Which collection a data or DDL message is about, and in which database: 2.3's data messages
//! carry no database name, so the metadata, or its history for a collection gone from it,
//! says; never a guess.

use tracing::info;

use super::{CaptureError, CollectionLookup};
use crate::model::{CollectionRef, Scope};
use crate::source::decode::SourceMessage;
use crate::source::meta::CollectionMeta;

/// A message's collection under its source names, and its metadata when the source still has it.
pub(super) struct Addressed {
    pub collection: CollectionRef,
    pub meta: Option<CollectionMeta>,
}

/// The collection `message` is about (at source time `ts`); None when the task has nothing to
/// do with it: a name its scope cannot contain, or a later DDL of a collection that is gone
/// from the metadata and that the task never saw.
pub(super) fn address(
    message: &SourceMessage,
    ts: u64,
    scope: &Scope,
    lookup: &mut dyn CollectionLookup,
) -> Result<Option<Addressed>, CaptureError> {
    let Some((collection_id, db_name, name)) = named(message) else {
        return Ok(None);
    };
    if !scope.may_contain(name) {
        return Ok(None);
    }
    // Data messages of 2.3 carry no database name; the metadata knows it.
    let meta = lookup.collection(collection_id)?;
    let later_ddl = matches!(
        message,
        SourceMessage::DropCollection(_)
            | SourceMessage::CreatePartition(_)
            | SourceMessage::DropPartition(_)
    );
    if meta.is_none() && later_ddl && lookup.vchannels_seen(collection_id)?.is_empty() {
        // Gone from the metadata and never seen by the task: the target has nothing of it
        // from this task, whichever database it was in.
        info!(collection = %name, id = collection_id,
              "DDL of a collection neither on the source nor seen by the task: nothing to apply");
        return Ok(None);
    }
    let db_name = match (&meta, db_name.is_empty()) {
        (Some(meta), true) => meta.db_name.clone(),
        (_, false) => db_name.clone(),
        // Never a guess: the database it was in, from the source, or the task stops on it.
        (None, true) => {
            lookup
                .database_at(collection_id, ts)?
                .ok_or_else(|| CaptureError::NoDatabase {
                    collection: name.clone(),
                    id: collection_id,
                })?
        }
    };
    let name = match (&meta, name.is_empty()) {
        (Some(meta), true) => meta.name.clone(),
        _ => name.clone(),
    };
    let collection = CollectionRef {
        id: collection_id,
        db_name,
        name,
    };
    Ok(Some(Addressed { collection, meta }))
}

/// The collection id, database and collection name a data or DDL message carries.
fn named(message: &SourceMessage) -> Option<(i64, &String, &String)> {
    Some(match message {
        SourceMessage::Insert(m) => (m.collection_id, &m.db_name, &m.collection_name),
        SourceMessage::Delete(m) => (m.collection_id, &m.db_name, &m.collection_name),
        SourceMessage::CreateCollection(m) => (m.collection_id, &m.db_name, &m.collection_name),
        SourceMessage::DropCollection(m) => (m.collection_id, &m.db_name, &m.collection_name),
        SourceMessage::CreatePartition(m) => (m.collection_id, &m.db_name, &m.collection_name),
        SourceMessage::DropPartition(m) => (m.collection_id, &m.db_name, &m.collection_name),
        SourceMessage::Replicated(_)
        | SourceMessage::TimeTick { .. }
        | SourceMessage::Ignored { .. } => return None,
    })
}
