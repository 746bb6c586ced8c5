//! A metadata event as the request the target is sent, for the collection it is about.

use milvus::proto::common::KeyValuePair;
use milvus::proto::milvus::{
    AlterAliasRequest, AlterCollectionRequest, CreateAliasRequest, DropAliasRequest,
    LoadPartitionsRequest, ReleasePartitionsRequest, RenameCollectionRequest,
};
use prost::Message;
use tracing::debug;

use super::seeds::loaded_whole;
use super::{MetaEvent, MetaWatcher, WatchError};
use crate::model::{CollectionRef, ReplicatedKind, Scope, StagedChange};
use crate::source::meta::{CollectionMeta, SourceMeta};

impl MetaWatcher<'_> {
    /// The event as a replicated change of its collection, if it is in scope and still there.
    pub(super) async fn change(
        &self,
        meta: &SourceMeta,
        event: MetaEvent,
        ts: u64,
        revision: i64,
    ) -> Result<Option<StagedChange>, WatchError> {
        let collection_id = event.collection_id();
        // As of the event: a partition released with its drop has no name any more now.
        let revision = if matches!(event, MetaEvent::PartitionReleased { .. }) {
            revision - 1
        } else {
            revision
        };
        let Some(c) = meta.collection_at(collection_id, revision).await? else {
            debug!(
                collection = collection_id,
                ?event,
                "metadata event of a collection gone"
            );
            return Ok(None);
        };
        if !self.scope.contains(&c.db_name, &c.name) {
            return Ok(None);
        }
        let request = match event {
            // Kept by `staged`, never staged.
            MetaEvent::CollectionReleased { .. } | MetaEvent::CollectionLoadRecorded { .. } => None,
            MetaEvent::AliasSet { alias, moved, .. } => Some(alias_set(&c, alias, moved)),
            MetaEvent::AliasDropped { alias, .. } => Some(alias_dropped(&c, alias)),
            MetaEvent::PartitionLoaded {
                partition_id,
                replicas,
                ..
            } => {
                // Loaded whole: the collection's load, on the replicate channel, is the one.
                if loaded_whole(meta, collection_id, revision).await? {
                    None
                } else {
                    partition_name(&c, partition_id).map(|name| load_partition(&c, name, replicas))
                }
            }
            // The last partition loaded, or all of a collection loaded partition by partition:
            // releasing them on the target is that release too.
            MetaEvent::PartitionReleased { partition_id, .. } => {
                partition_name(&c, partition_id).map(|name| release_partition(&c, name))
            }
            MetaEvent::CollectionAltered { .. } => self.altered(&c).await?,
            MetaEvent::CollectionRenamed { from, .. } => Some(self.renamed(&c, from)),
        };
        Ok(request
            .map(|(kind, request)| staged_event(self.channel, ts, self.scope, &c, kind, request)))
    }

    /// The collection's properties as the source has them now (etcd holds those from before
    /// the change: see [`MetaEvent::CollectionAltered`]).
    async fn altered(
        &self,
        c: &CollectionMeta,
    ) -> Result<Option<(ReplicatedKind, Vec<u8>)>, WatchError> {
        let Some(source) = self.source else {
            // Not the channel's own key, which every stage clears.
            self.health.problem(
                "collection properties",
                format!(
                    "the properties of {}.{} changed on the source: reading them needs \
                     [source] milvus_uri",
                    c.db_name, c.name
                ),
            );
            return Ok(None);
        };
        Ok(source.properties(&c.reference()).await?.map(|properties| {
            (
                ReplicatedKind::AlterCollection,
                alter_collection(c, properties),
            )
        }))
    }

    /// The rename in the target's names: a task may map names.
    fn renamed(&self, c: &CollectionMeta, from: String) -> (ReplicatedKind, Vec<u8>) {
        let old = self.scope.on_target(CollectionRef {
            name: from,
            ..c.reference()
        });
        let new = self.scope.on_target(c.reference());
        let r = RenameCollectionRequest {
            db_name: new.db_name,
            old_name: old.name,
            new_name: new.name,
            ..Default::default()
        };
        (ReplicatedKind::RenameCollection, r.encode_to_vec())
    }
}

fn partition_name(c: &CollectionMeta, id: i64) -> Option<String> {
    c.partitions
        .iter()
        .find(|p| p.id == id)
        .map(|p| p.name.clone())
}

fn alias_set(c: &CollectionMeta, alias: String, moved: bool) -> (ReplicatedKind, Vec<u8>) {
    if moved {
        let r = AlterAliasRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            alias,
            ..Default::default()
        };
        (ReplicatedKind::AlterAlias, r.encode_to_vec())
    } else {
        let r = CreateAliasRequest {
            db_name: c.db_name.clone(),
            collection_name: c.name.clone(),
            alias,
            ..Default::default()
        };
        (ReplicatedKind::CreateAlias, r.encode_to_vec())
    }
}

fn alias_dropped(c: &CollectionMeta, alias: String) -> (ReplicatedKind, Vec<u8>) {
    let r = DropAliasRequest {
        db_name: c.db_name.clone(),
        alias,
        ..Default::default()
    };
    (ReplicatedKind::DropAlias, r.encode_to_vec())
}

pub(super) fn load_partitions(
    c: &CollectionMeta,
    partition_names: Vec<String>,
    replicas: i32,
) -> (ReplicatedKind, Vec<u8>) {
    let r = LoadPartitionsRequest {
        db_name: c.db_name.clone(),
        collection_name: c.name.clone(),
        partition_names,
        replica_number: replicas,
        ..Default::default()
    };
    (ReplicatedKind::LoadPartitions, r.encode_to_vec())
}

fn load_partition(c: &CollectionMeta, name: String, replicas: i32) -> (ReplicatedKind, Vec<u8>) {
    load_partitions(c, vec![name], replicas)
}

fn release_partition(c: &CollectionMeta, name: String) -> (ReplicatedKind, Vec<u8>) {
    let r = ReleasePartitionsRequest {
        db_name: c.db_name.clone(),
        collection_name: c.name.clone(),
        partition_names: vec![name],
        ..Default::default()
    };
    (ReplicatedKind::ReleasePartitions, r.encode_to_vec())
}

/// The request that gives the target's collection these properties.
pub(super) fn alter_collection(c: &CollectionMeta, properties: Vec<(String, String)>) -> Vec<u8> {
    AlterCollectionRequest {
        db_name: c.db_name.clone(),
        collection_name: c.name.clone(),
        properties: properties
            .into_iter()
            .map(|(key, value)| KeyValuePair { key, value })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
}

pub(super) fn staged_event(
    channel: &str,
    ts: u64,
    scope: &Scope,
    c: &CollectionMeta,
    kind: ReplicatedKind,
    request: Vec<u8>,
) -> StagedChange {
    StagedChange::replicated(
        channel,
        ts,
        scope.on_target(c.reference()),
        kind,
        request,
        c.virtual_channels.clone(),
    )
}
