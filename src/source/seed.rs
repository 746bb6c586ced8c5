//! What a new task stages before it reads anything: its start position on every channel, and
//! for the collections that exist already what the target needs and the task will not read
//! (their creation, partitions, indexes and load state), staged at timestamp 0 so it precedes
//! every row of the collection.
//!
//! Crash behaviour: each channel's start is one journal transaction, with its seeds; the task
//! record is written only after every channel's start (by `task`), so a crash during a create
//! leaves channel starts that the next create of the same id overwrites, and no task.

use std::collections::BTreeMap;

use milvus::proto::common::KeyValuePair;
use milvus::proto::milvus::{CreateIndexRequest, LoadCollectionRequest};
use tracing::{info, warn};

use super::capture::user_fields_only;
use super::meta::{CollectionMeta, MetaError, SourceMeta};
use super::mq::{MessageQueue, MqError};
use super::start::{CollectionStart, Seeds, StartError, channel_start};
use crate::journal::{Journal, JournalError, TaskRun};
use crate::model::{
    CollectionRef, DEFAULT_PARTITION, DdlEvent, MqPosition, ReplicatedKind, Scope, StagedChange,
    StartPosition,
};

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Mq(#[from] MqError),
    #[error("source metadata: {0}")]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// How a new task starts.
pub struct TaskStart {
    /// The run that seeds the task.
    pub run: TaskRun,
    pub scope: Scope,
    pub start: StartPosition,
    /// Positions the create gave, per physical channel: they take the place of `start` there.
    pub positions: BTreeMap<String, MqPosition>,
    /// The in-scope collections that exist now.
    pub existing: Vec<CollectionMeta>,
    /// The source's replicate channel.
    pub replicate_channel: String,
    /// The existing collections' indexes and load state (none from `earliest`, which reads
    /// them), staged on the replicate channel with its start.
    pub operations: Vec<StagedChange>,
}

/// Stages the task's start on every channel of the source (blocking: it asks the broker).
pub fn stage_start(
    journal: &Journal,
    queue: &dyn MessageQueue,
    mut start: TaskStart,
) -> Result<(), SeedError> {
    let run = &start.run;
    let channels = queue.channels()?;
    if let Some(unknown) = start.positions.keys().find(|c| !channels.contains(c)) {
        return Err(StartError::UnknownChannel(unknown.clone()).into());
    }
    for channel in &channels {
        let retained = queue.retained(channel)?;
        let given = start.positions.get(channel).copied();
        let (position, seeds) = channel_start(channel, given, start.start, &retained, || {
            collection_starts(queue, &start.existing, channel)
        })?;
        let seeds = match seeds {
            Seeds::None => Vec::new(),
            Seeds::Collections => collection_seeds(&start.existing, channel, &start.scope),
            Seeds::Operations => std::mem::take(&mut start.operations),
        };
        journal.stage(run, channel, &seeds, position, 0)?;
    }
    if !start.operations.is_empty() {
        // The source has not written its replicate channel yet: all of it will be new.
        journal.stage(
            run,
            &start.replicate_channel,
            &start.operations,
            MqPosition::beginning(queue.kind()),
            0,
        )?;
    }
    Ok(())
}

/// Where the collections on `pchannel` started, as Milvus recorded it.
fn collection_starts(
    queue: &dyn MessageQueue,
    collections: &[CollectionMeta],
    pchannel: &str,
) -> Result<Vec<CollectionStart>, StartError> {
    let mut starts = Vec::new();
    for c in collections {
        for (channel, recorded) in c.start_positions.iter().filter(|(ch, _)| ch == pchannel) {
            let position =
                queue
                    .start_of(recorded)
                    .map_err(|err| StartError::BadCollectionStart {
                        collection: c.name.clone(),
                        channel: channel.clone(),
                        reason: err.to_string(),
                    })?;
            starts.push(CollectionStart {
                collection: c.name.clone(),
                position,
            });
        }
    }
    Ok(starts)
}

/// The source collection `c` under its target names.
fn on_target(scope: &Scope, c: &CollectionMeta) -> CollectionRef {
    scope.on_target(c.reference())
}

/// The CreateCollection (and CreatePartition) events that bring `collections` to the target,
/// on their vchannels of `pchannel`.
pub fn collection_seeds(
    collections: &[CollectionMeta],
    pchannel: &str,
    scope: &Scope,
) -> Vec<StagedChange> {
    let mut seeds = Vec::new();
    for c in collections {
        let collection = on_target(scope, c);
        let create = DdlEvent::CreateCollection {
            schema: prost::Message::encode_to_vec(&user_fields_only(c.schema.clone())),
            shards_num: c.shards_num,
            consistency_level: c.consistency_level,
        };
        let partitions = c
            .partitions
            .iter()
            .filter(|p| p.name != DEFAULT_PARTITION)
            .map(|p| DdlEvent::CreatePartition {
                partition: p.name.clone(),
            });
        for event in std::iter::once(create).chain(partitions) {
            seeds.extend(StagedChange::ddl_copies(
                &collection,
                &c.virtual_channels,
                pchannel,
                0,
                &event,
            ));
        }
    }
    seeds
}

/// The CreateIndex and Load events that give `collections` their indexes and load state on the
/// target, staged on the replicate channel: each waits for its collection's creation.
pub async fn operation_seeds(
    meta: &SourceMeta,
    collections: &[CollectionMeta],
    channel: &str,
    scope: &Scope,
) -> Result<Vec<StagedChange>, MetaError> {
    let mut seeds = Vec::new();
    for c in collections {
        let event = |kind, request: Vec<u8>| {
            let waits_for = c.virtual_channels.clone();
            StagedChange::replicated(channel, 0, on_target(scope, c), kind, request, waits_for)
        };
        for index in meta.indexes(c.id).await? {
            let Some(field) = c
                .schema
                .fields
                .iter()
                .find(|f| f.field_id == index.field_id)
            else {
                warn!(collection = %c.name, index = %index.index_name, field = index.field_id,
                    "index on a field the collection does not have: not copied");
                continue;
            };
            let request = CreateIndexRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                field_name: field.name.clone(),
                extra_params: index
                    .params
                    .into_iter()
                    .map(|(key, value)| KeyValuePair { key, value })
                    .collect(),
                index_name: index.index_name,
                ..Default::default()
            };
            let request = prost::Message::encode_to_vec(&request);
            seeds.push(event(ReplicatedKind::CreateIndex, request));
        }
        if let Some(replica_number) = meta.loaded_replicas(c.id).await? {
            let request = LoadCollectionRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                replica_number,
                ..Default::default()
            };
            let request = prost::Message::encode_to_vec(&request);
            seeds.push(event(ReplicatedKind::Load, request));
        }
    }
    Ok(seeds)
}

/// Seeds the in-scope collections that etcd lists now but not in `listed` (the ids listed
/// before the start positions were taken): created meanwhile, their CreateCollection messages may lie before those
/// positions and never be read. Where a message is read as well, the target keeps the
/// collection the seed created.
pub async fn seed_created_meanwhile(
    journal: &Journal,
    meta: &SourceMeta,
    run: &TaskRun,
    scope: &Scope,
    listed: &[i64],
) -> Result<(), SeedError> {
    let task = run.task();
    let created: Vec<CollectionMeta> = meta
        .collections()
        .await?
        .into_iter()
        .filter(|c| !listed.contains(&c.id) && scope.contains(&c.db_name, &c.name))
        .collect();
    for collection in &created {
        info!(task, collection = %collection.name,
            "collection created while the task started: seeded");
        let mut pchannels = collection.physical_channels.clone();
        pchannels.sort();
        pchannels.dedup();
        for pchannel in pchannels {
            // A channel the task has no position on yet is read from its beginning.
            let Some(offset) = journal.source_offset(task, &pchannel)? else {
                continue;
            };
            let seeds = collection_seeds(std::slice::from_ref(collection), &pchannel, scope);
            // The offset stays as it is, its fingerprint included.
            journal.stage_read(
                run,
                &pchannel,
                &seeds,
                offset.next,
                offset.last,
                offset.tick,
            )?;
        }
    }
    Ok(())
}
