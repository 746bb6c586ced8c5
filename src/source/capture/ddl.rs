//! Collection and partition DDL: staged on every vchannel of the collection that lives on the
//! physical channel it was read from, each copy waiting for all the collection's vchannels.

use milvus::proto::msg;
use milvus::proto::schema::CollectionSchema;
use prost::Message;

use super::{CaptureError, Captured, CollectionLookup, Context, user_fields_only};
use crate::model::{CollectionRef, DdlEvent, StagedChange};
use crate::source::meta::CollectionMeta;

// `CreateCollectionRequest::schema` is deprecated upstream; it is where Milvus 2.3 puts it.
#[allow(deprecated)]
pub(super) fn create_collection(
    m: msg::CreateCollectionRequest,
    collection: CollectionRef,
    meta: Option<&CollectionMeta>,
    at: &Context,
) -> Result<Captured, CaptureError> {
    // The name lives inside the schema in 2.3, not in the message.
    let schema = match m.collection_schema {
        Some(schema) => schema,
        None if !m.schema.is_empty() => {
            CollectionSchema::decode(m.schema.as_slice()).map_err(|_| CaptureError::NoSchema {
                collection: collection.id,
            })?
        }
        None => {
            return Err(CaptureError::NoSchema {
                collection: collection.id,
            });
        }
    };
    // The schema has the name the collection was made with: the metadata may have a later one
    // (a rename since), and each shard's reader may have read it at another time.
    let collection = CollectionRef {
        name: if schema.name.is_empty() {
            collection.name
        } else {
            schema.name.clone()
        },
        ..collection
    };
    if !at.scope.contains(&collection.db_name, &collection.name) {
        return Ok(Captured::Skipped);
    }
    let user_schema = user_fields_only(schema);
    let consistency_level = meta.map_or(0, |meta| meta.consistency_level);
    let event = DdlEvent::CreateCollection {
        schema: user_schema.encode_to_vec(),
        shards_num: m.virtual_channel_names.len() as i32,
        consistency_level,
    };
    Ok(Captured::Changes(StagedChange::ddl_copies(
        &collection,
        &m.virtual_channel_names,
        at.pchannel,
        at.ts,
        &event,
    )))
}

/// A drop of the collection, or a partition made or dropped in it.
pub(super) fn later(
    event: DdlEvent,
    collection: CollectionRef,
    meta: Option<CollectionMeta>,
    at: &Context,
    lookup: &mut dyn CollectionLookup,
) -> Result<Captured, CaptureError> {
    if !at.scope.contains(&collection.db_name, &collection.name) {
        return Ok(Captured::Skipped);
    }
    let vchannels = match meta {
        Some(meta) => meta.virtual_channels,
        // Gone from the metadata: its drop finished before the task got here. The vchannels
        // the task staged rows of stand for it; with none, the target never got this
        // collection from the task, and there is nothing to do there.
        None => lookup.vchannels_seen(collection.id)?,
    };
    if vchannels.is_empty() {
        return Ok(Captured::Skipped);
    }
    Ok(Captured::Changes(StagedChange::ddl_copies(
        &collection,
        &vchannels,
        at.pchannel,
        at.ts,
        &event,
    )))
}
