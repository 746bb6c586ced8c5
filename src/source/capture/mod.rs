//! Turning decoded source messages into journal changes for one task.
//!
//! Data messages name their vchannel (`shardName`). DDL messages do not: they arrive once per
//! physical channel of the collection, so they are staged on every vchannel of the collection
//! that lives on that physical channel, each copy listing all the collection's vchannels as the
//! barrier the applier waits for.
//!
//! Operations read from the replicate-msg topic (index, load, release, flush, database) name
//! their collection, not its channels: each is staged once, on the replicate channel, listing
//! the collection's vchannels (from the metadata) as what it waits for.
//!
//! `route` finds the collection and database a data or DDL message is about, `data` and `ddl`
//! stage each kind, `replicated` the replicate-msg events, `lookup` is what they ask of the
//! source's metadata.

mod data;
mod ddl;
mod lookup;
mod replicated;
mod route;
#[cfg(test)]
#[allow(deprecated)]
mod tests;

use milvus::proto::schema::CollectionSchema;

use super::decode::{SourceMessage, timestamp};
use crate::model::{Change, DdlEvent, Scope, StagedChange};
pub use lookup::{CollectionLookup, LookupError};

#[derive(Debug, PartialEq)]
pub enum Captured {
    Changes(Vec<StagedChange>),
    Tick(u64),
    /// Out of scope, or a type replication does not use.
    Skipped,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CaptureError {
    #[error("CreateCollection of {collection} carries no schema")]
    NoSchema { collection: i64 },
    #[error("Delete on {shard} carries no primary keys")]
    NoKeys { shard: String },
    #[error(
        "collection {collection} (id {id}): the source's metadata no longer says which database \
         it was in (dropped long before the task read this message), so its change cannot be \
         addressed"
    )]
    NoDatabase { collection: String, id: i64 },
    #[error(transparent)]
    Lookup(#[from] LookupError),
}

/// Where and when a message was read, and the task's scope: what each kind's capture needs.
struct Context<'a> {
    pchannel: &'a str,
    ts: u64,
    scope: &'a Scope,
}

/// `message` as journal changes, addressed to the target's names of its collections.
pub fn capture(
    message: SourceMessage,
    pchannel: &str,
    scope: &Scope,
    lookup: &mut dyn CollectionLookup,
) -> Result<Captured, CaptureError> {
    Ok(
        match capture_under_source_names(message, pchannel, scope, lookup)? {
            Captured::Changes(mut changes) => {
                for staged in &mut changes {
                    let collection = match &mut staged.change {
                        Change::Insert(b) => &mut b.collection,
                        Change::Delete(b) => &mut b.collection,
                        Change::Ddl(d) => &mut d.collection,
                    };
                    *collection = scope.on_target(collection.clone());
                }
                Captured::Changes(changes)
            }
            other => other,
        },
    )
}

/// `message` as journal changes under the source's names: each kind's capture, once
/// `route::address` has found the collection and database it is about.
fn capture_under_source_names(
    message: SourceMessage,
    pchannel: &str,
    scope: &Scope,
    lookup: &mut dyn CollectionLookup,
) -> Result<Captured, CaptureError> {
    let ts = timestamp(&message);
    match &message {
        SourceMessage::TimeTick { ts } => return Ok(Captured::Tick(*ts)),
        SourceMessage::Ignored { .. } => return Ok(Captured::Skipped),
        SourceMessage::Replicated(request) => {
            return Ok(replicated::capture_replicated(
                request, pchannel, ts, scope, lookup,
            )?);
        }
        _ => {}
    }
    let Some(route::Addressed { collection, meta }) = route::address(&message, ts, scope, lookup)?
    else {
        return Ok(Captured::Skipped);
    };
    let at = Context {
        pchannel,
        ts,
        scope,
    };
    let event = match message {
        SourceMessage::Insert(m) => return Ok(data::insert(m, collection, &at)),
        SourceMessage::Delete(m) => return data::delete(m, collection, &at),
        SourceMessage::CreateCollection(m) => {
            return ddl::create_collection(*m, collection, meta.as_ref(), &at);
        }
        SourceMessage::DropCollection(_) => DdlEvent::DropCollection,
        SourceMessage::CreatePartition(m) => DdlEvent::CreatePartition {
            partition: m.partition_name,
        },
        SourceMessage::DropPartition(m) => DdlEvent::DropPartition {
            partition: m.partition_name,
        },
        _ => return Ok(Captured::Skipped),
    };
    ddl::later(event, collection, meta, &at, lookup)
}

/// The schema without Milvus's system fields (RowID, Timestamp: ids below 100), which the
/// target adds itself.
pub fn user_fields_only(mut schema: CollectionSchema) -> CollectionSchema {
    schema.fields.retain(|f| f.field_id >= 100);
    schema
}
