//! Inserts and deletes: staged once, on the vchannel they name.

use milvus::proto::msg;
use milvus::proto::schema::{IDs, i_ds::IdField};

use super::{CaptureError, Captured, Context};
use crate::model::{
    Change, CollectionRef, DeleteBatch, EncodedColumn, InsertBatch, PrimaryKeys, StagedChange,
};
use crate::source::decode::InsertMessage;

pub(super) fn insert(m: InsertMessage, collection: CollectionRef, at: &Context) -> Captured {
    if !at.scope.contains(&collection.db_name, &collection.name) {
        return Captured::Skipped;
    }
    let change = Change::Insert(InsertBatch {
        collection,
        partition: m.partition_name,
        num_rows: m.num_rows,
        fields_data: m.fields_data.into_iter().map(EncodedColumn::from).collect(),
    });
    Captured::Changes(vec![StagedChange {
        vchannel: m.shard_name,
        ts: at.ts,
        change,
    }])
}

pub(super) fn delete(
    m: msg::DeleteRequest,
    collection: CollectionRef,
    at: &Context,
) -> Result<Captured, CaptureError> {
    if !at.scope.contains(&collection.db_name, &collection.name) {
        return Ok(Captured::Skipped);
    }
    let keys = match m.primary_keys {
        Some(IDs {
            id_field: Some(IdField::IntId(ids)),
        }) => PrimaryKeys::Int64(ids.data),
        Some(IDs {
            id_field: Some(IdField::StrId(ids)),
        }) => PrimaryKeys::VarChar(ids.data),
        _ if !m.int64_primary_keys.is_empty() => PrimaryKeys::Int64(m.int64_primary_keys),
        _ => {
            return Err(CaptureError::NoKeys {
                shard: m.shard_name,
            });
        }
    };
    let change = Change::Delete(DeleteBatch {
        collection,
        partition: m.partition_name,
        keys,
    });
    Ok(Captured::Changes(vec![StagedChange {
        vchannel: m.shard_name,
        ts: at.ts,
        change,
    }]))
}
