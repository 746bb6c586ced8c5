//! What a new task needs of the collections that exist when it starts.

use milvus::proto::milvus::CreateAliasRequest;
use prost::Message;

use super::WatchError;
use super::classify::{LOAD_COLLECTION, LOAD_PARTITIONS, decode};
use super::request::{alter_collection, load_partitions, staged_event};
use crate::milvus_client::RowReader;
use crate::model::{ReplicatedKind, Scope, StagedChange};
use crate::proto::etcd_meta::{AliasInfo, CollectionLoadInfo, PartitionLoadInfo};
use crate::source::meta::{CollectionMeta, SourceMeta, TOMBSTONE};

/// What the target needs of `collections` as etcd had them at `revision`: their aliases, the
/// partitions loaded one by one, and their properties; each stamped at its collection's
/// creation, so it waits for the collection on the target whichever way the task starts.
pub async fn seeds(
    meta: &SourceMeta,
    source: Option<&RowReader>,
    collections: &[CollectionMeta],
    channel: &str,
    scope: &Scope,
    revision: i64,
) -> Result<Vec<StagedChange>, WatchError> {
    let mut seeds = Vec::new();
    let aliases = meta
        .values_under("root-coord/database/aliases/", revision)
        .await?;
    for c in collections {
        let event =
            |kind, request: Vec<u8>| staged_event(channel, c.create_time, scope, c, kind, request);
        for (key, value) in &aliases {
            if value.as_slice() == TOMBSTONE {
                continue;
            }
            let info: AliasInfo = decode(key, value)?;
            if info.collection_id == c.id && info.state == 0 {
                let r = CreateAliasRequest {
                    db_name: c.db_name.clone(),
                    collection_name: c.name.clone(),
                    alias: info.alias_name,
                    ..Default::default()
                };
                seeds.push(event(ReplicatedKind::CreateAlias, r.encode_to_vec()));
            }
        }
        if let Some(load) = load_info(meta, c.id, revision).await?
            && load.load_type == LOAD_PARTITIONS
        {
            let loaded = meta
                .values_under(
                    &format!("querycoord-partition-loadinfo/{}/", c.id),
                    revision,
                )
                .await?;
            let mut names = Vec::new();
            for (key, value) in &loaded {
                let info: PartitionLoadInfo = decode(key, value)?;
                names.extend(
                    c.partitions
                        .iter()
                        .filter(|p| p.id == info.partition_id)
                        .map(|p| p.name.clone()),
                );
            }
            if !names.is_empty() {
                let (kind, request) = load_partitions(c, names, load.replica_number.max(1));
                seeds.push(event(kind, request));
            }
        }
        if let Some(source) = source
            && let Some(properties) = source.properties(&c.reference()).await?
            && !properties.is_empty()
        {
            seeds.push(event(
                ReplicatedKind::AlterCollection,
                alter_collection(c, properties),
            ));
        }
    }
    Ok(seeds)
}

/// The collection's load record at `revision`, if it has one.
async fn load_info(
    meta: &SourceMeta,
    collection_id: i64,
    revision: i64,
) -> Result<Option<CollectionLoadInfo>, WatchError> {
    let key = format!("querycoord-collection-loadinfo/{collection_id}");
    match meta.value_at(&key, revision).await? {
        Some(v) if v != TOMBSTONE => Ok(Some(decode(&key, &v)?)),
        _ => Ok(None),
    }
}

/// Whether the collection was loaded as a whole (LoadCollection) at `revision`.
pub(super) async fn loaded_whole(
    meta: &SourceMeta,
    id: i64,
    revision: i64,
) -> Result<bool, WatchError> {
    Ok(load_info(meta, id, revision)
        .await?
        .is_some_and(|i| i.load_type == LOAD_COLLECTION))
}
