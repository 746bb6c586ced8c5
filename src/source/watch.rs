//! The metadata watcher: what Milvus 2.3 keeps only in its etcd and writes to no topic (aliases,
//! load and release of partitions, collection properties, renames, and for a task that opts in
//! access control: see [`super::access`]), read with an etcd watch and staged on the task's
//! metadata channel (`{prefix}-etcd-meta`) as replicated events.
//!
//! What it owns: the metadata channel's offset in the journal ([`MetaOffset`]: the next etcd
//! revision to read), staged with the events read before it in one transaction, like a
//! reader's source offset.
//!
//! Invariants:
//! - Every event is stamped no earlier than the channel's tick (the newest stamp staged), so
//!   none sorts behind one applied already. Root-coord changes carry their source timestamp
//!   (the `snapshots/..._ts{T}` key Milvus writes in the same etcd transaction); the query
//!   coordinator's load records carry none, and take the source's clock when they are seen:
//!   they are applied after every change made before them. A release of the whole collection
//!   is on the replicate channel; the partition records removed with it are not staged again.
//! - Each event waits for its collection's vchannels to be applied through its stamp (see
//!   `apply::order`), so an alias or a property reaches the target in order with the rows.
//! - Applying an event twice leaves the target as once (see `apply::milvus::replicated`): a
//!   crash between the target's answer and the applied position is harmless.
//!
//! Crash behaviour: the revision moves only with the events read up to it, in one journal
//! transaction. A crash before it reads them again from the stored revision; after it, from the
//! next. Nothing is read twice into the journal or lost, while etcd keeps the revisions: one it
//! has compacted away fails the task with the revisions named.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::EventType;
use milvus::proto::common::KeyValuePair;
use milvus::proto::milvus::{
    AlterAliasRequest, AlterCollectionRequest, CreateAliasRequest, DropAliasRequest,
    LoadPartitionsRequest, ReleasePartitionsRequest, RenameCollectionRequest,
};
use milvus::proto::schema::CollectionSchema;
use prost::Message;
use tracing::{debug, info};

use super::access;
use super::meta::{CollectionMeta, MetaError, SourceMeta, TOMBSTONE};
use crate::health::Health;
use crate::journal::{Journal, JournalError, TaskRun};
use crate::milvus_client::{ReadError, RowReader};
use crate::model::{Change, CollectionRef, ReplicatedKind, Scope, StagedChange, now_ms};
use crate::proto::etcd_meta::{AliasInfo, CollectionInfo, CollectionLoadInfo, PartitionLoadInfo};

/// How long the watch may stay silent before etcd is asked for its progress, and how long
/// without any answer before the watch is taken for dead and opened again.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
const SILENT_FOR: Duration = Duration::from_secs(30);
/// Milvus writes etcd often (segment states, channel checkpoints): a revision with nothing for
/// the target moves the stored one at most this often. Reading those again after a crash
/// stages nothing.
const IDLE_STAGE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("etcd watch: {0}")]
    Watch(String),
    #[error(
        "the source's etcd no longer has revision {next_revision} of its metadata (compacted \
         through {compacted}): aliases, load state and properties changed since cannot be read"
    )]
    Compacted { next_revision: i64, compacted: i64 },
    #[error("the task has no metadata channel offset")]
    NotSeeded,
    #[error(transparent)]
    SourceApi(#[from] ReadError),
    #[error("{0}")]
    SourceClock(String),
    #[error("etcd key {key}: {reason}")]
    BadValue { key: String, reason: String },
}

/// One change of the metadata that the target needs, as etcd says it.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaEvent {
    AliasSet {
        alias: String,
        collection_id: i64,
        /// Whether the alias named another collection before (or none).
        moved: bool,
    },
    AliasDropped {
        alias: String,
        collection_id: i64,
    },
    PartitionLoaded {
        collection_id: i64,
        partition_id: i64,
        replicas: i32,
    },
    PartitionReleased {
        collection_id: i64,
        partition_id: i64,
    },
    /// A collection's load record removed: all of it released. Its ReleaseCollection is on
    /// the replicate channel; when it had been loaded whole, the partition records removed
    /// after it are that same release, not releases of partitions.
    CollectionReleased {
        collection_id: i64,
        was_whole: bool,
    },
    /// A collection's load record written: loaded (again).
    CollectionLoadRecorded {
        collection_id: i64,
    },
    /// The collection's record was written again, unrenamed: its properties may have
    /// changed. Milvus 2.3.5 writes the record as it was *before* the change, so the
    /// properties are read from the source's API, not from etcd.
    CollectionAltered {
        collection_id: i64,
    },
    CollectionRenamed {
        collection_id: i64,
        from: String,
        to: String,
    },
}

/// A key/value of a watch event: the key, its value after (None when deleted), before.
pub struct KeyChange<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
    pub prev: Option<&'a [u8]>,
}

fn live(value: Option<&[u8]>) -> Option<&[u8]> {
    value.filter(|v| *v != TOMBSTONE)
}

fn decode<M: Message + Default>(key: &str, bytes: &[u8]) -> Result<M, WatchError> {
    M::decode(bytes).map_err(|e| WatchError::BadValue {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// The source timestamps of one revision's root-coord changes: Milvus writes each as
/// `{root}/meta/snapshots/{key}_ts{T}` beside `{root}/meta/{key}`.
pub fn stamps<'a>(
    meta_root: &str,
    keys: impl IntoIterator<Item = &'a str>,
) -> HashMap<String, u64> {
    let prefix = format!("{meta_root}/snapshots/");
    keys.into_iter()
        .filter_map(|key| {
            let (original, ts) = key.strip_prefix(&prefix)?.rsplit_once("_ts")?;
            Some((format!("{meta_root}/{original}"), ts.parse().ok()?))
        })
        .collect()
}

/// `CollectionLoadInfo.load_type`.
const LOAD_PARTITIONS: i32 = 1;
const LOAD_COLLECTION: i32 = 2;

/// What one key change means for the target, if anything.
pub fn classify(meta_root: &str, change: &KeyChange) -> Result<Option<MetaEvent>, WatchError> {
    let Some(rel) = change
        .key
        .strip_prefix(meta_root)
        .and_then(|k| k.strip_prefix('/'))
    else {
        return Ok(None);
    };
    let segments: Vec<&str> = rel.split('/').collect();
    const CREATED: i32 = 0;
    Ok(match segments.as_slice() {
        ["root-coord", "database", "aliases", _db, alias] => {
            let before = live(change.prev)
                .map(|v| decode::<AliasInfo>(change.key, v))
                .transpose()?;
            match live(change.value) {
                Some(v) => {
                    let info: AliasInfo = decode(change.key, v)?;
                    if info.state != CREATED {
                        return Ok(None);
                    }
                    let same = before.as_ref().is_some_and(|b| {
                        b.state == CREATED && b.collection_id == info.collection_id
                    });
                    (!same).then(|| MetaEvent::AliasSet {
                        alias: (*alias).to_owned(),
                        collection_id: info.collection_id,
                        moved: before.is_some(),
                    })
                }
                None => before.map(|b| MetaEvent::AliasDropped {
                    alias: (*alias).to_owned(),
                    collection_id: b.collection_id,
                }),
            }
        }
        ["querycoord-collection-loadinfo", _coll] => match live(change.value) {
            Some(v) => Some(MetaEvent::CollectionLoadRecorded {
                collection_id: decode::<CollectionLoadInfo>(change.key, v)?.collection_id,
            }),
            None => live(change.prev)
                .map(|p| decode::<CollectionLoadInfo>(change.key, p))
                .transpose()?
                .map(|b| MetaEvent::CollectionReleased {
                    collection_id: b.collection_id,
                    was_whole: b.load_type == LOAD_COLLECTION,
                }),
        },
        ["querycoord-partition-loadinfo", _coll, _part] => match live(change.value) {
            Some(v) => {
                let info: PartitionLoadInfo = decode(change.key, v)?;
                let before = live(change.prev)
                    .map(|p| decode::<PartitionLoadInfo>(change.key, p))
                    .transpose()?;
                // Once per load: when it is first recorded, or its replicas change.
                let same = before.is_some_and(|b| b.replica_number == info.replica_number);
                (!same).then(|| MetaEvent::PartitionLoaded {
                    collection_id: info.collection_id,
                    partition_id: info.partition_id,
                    replicas: info.replica_number.max(1),
                })
            }
            None => live(change.prev)
                .map(|p| decode::<PartitionLoadInfo>(change.key, p))
                .transpose()?
                .map(|b| MetaEvent::PartitionReleased {
                    collection_id: b.collection_id,
                    partition_id: b.partition_id,
                }),
        },
        ["root-coord", "database", "collection-info", _db, _coll] => {
            let (Some(v), Some(p)) = (live(change.value), live(change.prev)) else {
                return Ok(None);
            };
            let (info, before): (CollectionInfo, CollectionInfo) =
                (decode(change.key, v)?, decode(change.key, p)?);
            if info.state != CREATED || before.state != CREATED {
                return Ok(None);
            }
            let name = |i: &CollectionInfo| {
                CollectionSchema::decode(i.schema.as_slice())
                    .map(|s| s.name)
                    .map_err(|e| WatchError::BadValue {
                        key: change.key.to_owned(),
                        reason: e.to_string(),
                    })
            };
            let (to, from) = (name(&info)?, name(&before)?);
            Some(if to == from {
                MetaEvent::CollectionAltered {
                    collection_id: info.id,
                }
            } else {
                MetaEvent::CollectionRenamed {
                    collection_id: info.id,
                    from,
                    to,
                }
            })
        }
        _ => None,
    })
}

/// Watches one task's source metadata and stages what the target needs.
pub struct MetaWatcher<'a> {
    pub run: &'a TaskRun,
    /// The metadata channel (`{prefix}-etcd-meta`).
    pub channel: &'a str,
    pub scope: &'a Scope,
    pub journal: &'a Journal,
    pub stop: Arc<AtomicBool>,
    pub health: &'a Health,
    /// The source's API, where collection properties are read (see
    /// [`MetaEvent::CollectionAltered`]).
    pub source: Option<&'a RowReader>,
    /// Whether the task replicates access control (see [`super::access`]).
    pub access_control: bool,
}

impl MetaWatcher<'_> {
    /// Watches from the stored revision until the task stops (Ok) or the watch fails.
    pub async fn run(&self, meta: &SourceMeta) -> Result<(), WatchError> {
        let offset = self
            .journal
            .meta_offset(self.run.task(), self.channel)
            .ok_or(WatchError::NotSeeded)?;
        let (mut next_revision, mut tick) = (offset.next_revision, offset.tick);
        let (mut watcher, mut stream) = meta.watch(next_revision).await?;
        let mut heard = Instant::now();
        let mut asked = Instant::now();
        let mut staged_at = Instant::now();
        // Collections whose whole load was released: see `MetaEvent::CollectionReleased`.
        let mut released_whole = HashSet::new();
        while !self.stop.load(Ordering::Relaxed) {
            let reply = match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
                Err(_) => {
                    if heard.elapsed() > SILENT_FOR {
                        return Err(WatchError::Watch(format!(
                            "no answer for {}s",
                            SILENT_FOR.as_secs()
                        )));
                    }
                    if asked.elapsed() > PROGRESS_EVERY {
                        asked = Instant::now();
                        watcher
                            .request_progress()
                            .await
                            .map_err(|e| WatchError::Watch(e.to_string()))?;
                    }
                    continue;
                }
                Ok(Err(e)) => return Err(WatchError::Watch(e.to_string())),
                Ok(Ok(None)) => return Err(WatchError::Watch("the watch ended".into())),
                Ok(Ok(Some(reply))) => reply,
            };
            heard = Instant::now();
            if reply.compact_revision() > 0 {
                return Err(WatchError::Compacted {
                    next_revision,
                    compacted: reply.compact_revision(),
                });
            }
            if reply.canceled() {
                return Err(WatchError::Watch(format!(
                    "canceled: {}",
                    reply.cancel_reason()
                )));
            }
            let events = reply.events();
            let last = events
                .iter()
                .filter_map(|e| e.kv().map(|kv| kv.mod_revision()))
                .max();
            let reached = match last {
                Some(revision) => revision,
                // A progress report: every event up to its revision has come.
                None => match reply.header() {
                    Some(header) => header.revision(),
                    None => continue,
                },
            };
            if reached < next_revision {
                continue;
            }
            let changes = self
                .staged(meta, events, &mut tick, &mut released_whole)
                .await?;
            next_revision = reached + 1;
            if changes.is_empty() && staged_at.elapsed() < IDLE_STAGE_EVERY {
                continue;
            }
            self.journal
                .stage_meta(self.run, self.channel, &changes, next_revision, tick)?;
            // Said once committed: a change is staged once, and read again only when not.
            for staged in &changes {
                if let Change::Ddl(ddl) = &staged.change {
                    info!(task = self.run.task(), collection = %ddl.collection.name,
                        database = %ddl.collection.db_name, operation = staged.change.operation().as_str(),
                        ts = staged.ts, "metadata change staged");
                }
            }
            staged_at = Instant::now();
            self.health.resolved(self.channel);
        }
        Ok(())
    }

    /// The staged changes of one watch reply's events, stamped no earlier than `tick`, which
    /// moves to the newest stamp.
    async fn staged(
        &self,
        meta: &SourceMeta,
        events: &[etcd_client::Event],
        tick: &mut u64,
        released_whole: &mut HashSet<i64>,
    ) -> Result<Vec<StagedChange>, WatchError> {
        let meta_root = meta.meta_root();
        let changes_read: Vec<(KeyChange, i64)> = events
            .iter()
            .filter_map(|e| {
                let kv = e.kv()?;
                let change = KeyChange {
                    key: kv.key_str().ok()?,
                    value: match e.event_type() {
                        EventType::Put => Some(kv.value()),
                        EventType::Delete => None,
                    },
                    prev: e.prev_kv().map(|p| p.value()),
                };
                Some((change, kv.mod_revision()))
            })
            .collect();
        let stamps = stamps(meta_root, changes_read.iter().map(|(c, _)| c.key));
        let mut changes = Vec::new();
        for (change, revision) in changes_read {
            if let Some(path) = self.access_control_path(meta_root, change.key) {
                let (created, deleted) = (
                    change.value.is_some() && change.prev.is_none(),
                    change.value.is_none() && change.prev.is_some(),
                );
                if let Some(event) = access::classify(&path, created, deleted) {
                    *tick = self.now().await?.max(*tick);
                    changes
                        .extend(access::staged(meta, self.channel, *tick, event, revision).await?);
                }
                continue;
            }
            let Some(event) = classify(meta_root, &change)? else {
                continue;
            };
            match event {
                MetaEvent::CollectionReleased {
                    collection_id,
                    was_whole,
                } => {
                    if was_whole {
                        released_whole.insert(collection_id);
                    }
                    continue;
                }
                MetaEvent::CollectionLoadRecorded { collection_id } => {
                    released_whole.remove(&collection_id);
                    continue;
                }
                MetaEvent::PartitionReleased { collection_id, .. }
                    if released_whole.contains(&collection_id) =>
                {
                    continue;
                }
                _ => {}
            }
            let ts = match stamps.get(change.key) {
                Some(&ts) => ts,
                None => self.now().await?,
            }
            .max(*tick);
            *tick = ts;
            if let Some(staged) = self.change(meta, event, ts, revision).await? {
                changes.push(staged);
            }
        }
        Ok(changes)
    }

    /// The segments of `key` under `credential/`, when the task replicates access control.
    fn access_control_path<'k>(&self, meta_root: &str, key: &'k str) -> Option<Vec<&'k str>> {
        if !self.access_control {
            return None;
        }
        let rel = key
            .strip_prefix(meta_root)?
            .strip_prefix("/root-coord/credential/")?;
        Some(rel.split('/').collect())
    }

    /// A source timestamp later than every change seen so far, for the query coordinator's
    /// load records, which carry none: a load is then applied after what came before it (a
    /// release of the whole collection on the replicate channel, say). The source's clock
    /// when its API is known, the appliance's otherwise.
    async fn now(&self) -> Result<u64, WatchError> {
        match self.source {
            Some(source) => source.timestamp().await.map_err(WatchError::SourceClock),
            None => Ok(now_ms() << 18),
        }
    }

    /// The event as a replicated change of its collection, if it is in scope and still there.
    async fn change(
        &self,
        meta: &SourceMeta,
        event: MetaEvent,
        ts: u64,
        revision: i64,
    ) -> Result<Option<StagedChange>, WatchError> {
        let collection_id = match &event {
            MetaEvent::AliasSet { collection_id, .. }
            | MetaEvent::AliasDropped { collection_id, .. }
            | MetaEvent::PartitionLoaded { collection_id, .. }
            | MetaEvent::PartitionReleased { collection_id, .. }
            | MetaEvent::CollectionReleased { collection_id, .. }
            | MetaEvent::CollectionLoadRecorded { collection_id }
            | MetaEvent::CollectionAltered { collection_id }
            | MetaEvent::CollectionRenamed { collection_id, .. } => *collection_id,
        };
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
        let partition = |id: i64| {
            c.partitions
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.name.clone())
        };
        let (kind, request) = match event {
            // Kept by `staged`, never staged.
            MetaEvent::CollectionReleased { .. } | MetaEvent::CollectionLoadRecorded { .. } => {
                return Ok(None);
            }
            MetaEvent::AliasSet { alias, moved, .. } => {
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
            MetaEvent::AliasDropped { alias, .. } => {
                let r = DropAliasRequest {
                    db_name: c.db_name.clone(),
                    alias,
                    ..Default::default()
                };
                (ReplicatedKind::DropAlias, r.encode_to_vec())
            }
            MetaEvent::PartitionLoaded {
                partition_id,
                replicas,
                ..
            } => {
                if loaded_whole(meta, collection_id, revision).await? {
                    return Ok(None);
                }
                let Some(name) = partition(partition_id) else {
                    return Ok(None);
                };
                let r = LoadPartitionsRequest {
                    db_name: c.db_name.clone(),
                    collection_name: c.name.clone(),
                    partition_names: vec![name],
                    replica_number: replicas,
                    ..Default::default()
                };
                (ReplicatedKind::LoadPartitions, r.encode_to_vec())
            }
            // The last partition loaded, or all of a collection loaded partition by partition:
            // releasing them on the target is that release too.
            MetaEvent::PartitionReleased { partition_id, .. } => {
                let Some(name) = partition(partition_id) else {
                    return Ok(None);
                };
                let r = ReleasePartitionsRequest {
                    db_name: c.db_name.clone(),
                    collection_name: c.name.clone(),
                    partition_names: vec![name],
                    ..Default::default()
                };
                (ReplicatedKind::ReleasePartitions, r.encode_to_vec())
            }
            MetaEvent::CollectionAltered { .. } => {
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
                let Some(properties) = source.properties(&c.reference()).await? else {
                    return Ok(None);
                };
                (
                    ReplicatedKind::AlterCollection,
                    alter_collection(&c, properties),
                )
            }
            MetaEvent::CollectionRenamed { from, .. } => {
                // In the target's names: a task may map names.
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
        };
        Ok(Some(staged_event(
            self.channel,
            ts,
            self.scope,
            &c,
            kind,
            request,
        )))
    }
}

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
                let r = LoadPartitionsRequest {
                    db_name: c.db_name.clone(),
                    collection_name: c.name.clone(),
                    partition_names: names,
                    replica_number: load.replica_number.max(1),
                    ..Default::default()
                };
                seeds.push(event(ReplicatedKind::LoadPartitions, r.encode_to_vec()));
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

/// The request that gives the target's collection these properties.
fn alter_collection(c: &CollectionMeta, properties: Vec<(String, String)>) -> Vec<u8> {
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

fn staged_event(
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
async fn loaded_whole(meta: &SourceMeta, id: i64, revision: i64) -> Result<bool, WatchError> {
    Ok(load_info(meta, id, revision)
        .await?
        .is_some_and(|i| i.load_type == LOAD_COLLECTION))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "by-dev/meta";

    fn alias(collection_id: i64, state: i32) -> Vec<u8> {
        AliasInfo {
            alias_name: "a".into(),
            collection_id,
            state,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn event(key: &str, value: Option<&[u8]>, prev: Option<&[u8]>) -> Option<MetaEvent> {
        classify(ROOT, &KeyChange { key, value, prev }).unwrap()
    }

    #[test]
    fn an_alias_created_moved_and_dropped_is_three_events() {
        let key = "by-dev/meta/root-coord/database/aliases/1/a";
        let (on_7, on_9) = (alias(7, 0), alias(9, 0));
        assert_eq!(
            event(key, Some(&on_7), None),
            Some(MetaEvent::AliasSet {
                alias: "a".into(),
                collection_id: 7,
                moved: false
            })
        );
        assert_eq!(
            event(key, Some(&on_9), Some(&on_7)),
            Some(MetaEvent::AliasSet {
                alias: "a".into(),
                collection_id: 9,
                moved: true
            })
        );
        assert_eq!(
            event(key, Some(&on_9), Some(&on_9)),
            None,
            "written again unchanged"
        );
        assert_eq!(
            event(key, Some(TOMBSTONE), Some(&on_9)),
            Some(MetaEvent::AliasDropped {
                alias: "a".into(),
                collection_id: 9
            })
        );
        assert_eq!(
            event(key, Some(&alias(9, 2)), Some(&on_9)),
            None,
            "being dropped"
        );
    }

    #[test]
    fn a_partition_load_record_is_a_load_once_and_its_removal_a_release() {
        let key = "by-dev/meta/querycoord-partition-loadinfo/7/70";
        let info = |status, replica_number| {
            PartitionLoadInfo {
                collection_id: 7,
                partition_id: 70,
                replica_number,
                status,
            }
            .encode_to_vec()
        };
        let (loading, loaded) = (info(1, 1), info(2, 1));
        assert_eq!(
            event(key, Some(&loading), None),
            Some(MetaEvent::PartitionLoaded {
                collection_id: 7,
                partition_id: 70,
                replicas: 1
            })
        );
        assert_eq!(
            event(key, Some(&loaded), Some(&loading)),
            None,
            "loading, then loaded"
        );
        assert_eq!(
            event(key, None, Some(&loaded)),
            Some(MetaEvent::PartitionReleased {
                collection_id: 7,
                partition_id: 70
            })
        );
    }

    #[test]
    fn a_collection_load_record_removed_says_whether_the_collection_was_loaded_whole() {
        let key = "by-dev/meta/querycoord-collection-loadinfo/7";
        let info = |load_type| {
            CollectionLoadInfo {
                collection_id: 7,
                load_type,
                ..Default::default()
            }
            .encode_to_vec()
        };
        let (whole, by_partition) = (info(LOAD_COLLECTION), info(LOAD_PARTITIONS));
        assert_eq!(
            event(key, None, Some(&whole)),
            Some(MetaEvent::CollectionReleased {
                collection_id: 7,
                was_whole: true
            })
        );
        assert_eq!(
            event(key, None, Some(&by_partition)),
            Some(MetaEvent::CollectionReleased {
                collection_id: 7,
                was_whole: false
            })
        );
        assert_eq!(
            event(key, Some(&by_partition), None),
            Some(MetaEvent::CollectionLoadRecorded { collection_id: 7 })
        );
    }

    #[test]
    fn a_collection_record_written_again_is_an_alter_or_a_rename_and_its_creation_or_drop_neither()
    {
        let key = "by-dev/meta/root-coord/database/collection-info/1/7";
        let info = |name: &str, state: i32| {
            CollectionInfo {
                id: 7,
                schema: CollectionSchema {
                    name: name.into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                state,
                ..Default::default()
            }
            .encode_to_vec()
        };
        let (creating, created, dropping) = (info("c", 1), info("c", 0), info("c", 2));
        // Milvus 2.3.5 writes an alter's record unchanged: a write is all it shows.
        assert_eq!(
            event(key, Some(&created), Some(&created)),
            Some(MetaEvent::CollectionAltered { collection_id: 7 })
        );
        assert_eq!(
            event(key, Some(&info("d", 0)), Some(&created)),
            Some(MetaEvent::CollectionRenamed {
                collection_id: 7,
                from: "c".into(),
                to: "d".into()
            })
        );
        assert_eq!(event(key, Some(&created), Some(&creating)), None);
        assert_eq!(event(key, Some(&created), None), None);
        assert_eq!(event(key, Some(&dropping), Some(&created)), None);
    }

    #[test]
    fn a_root_coord_change_is_stamped_by_its_snapshot_key() {
        let stamped = stamps(
            ROOT,
            [
                "by-dev/meta/root-coord/database/aliases/1/a",
                "by-dev/meta/snapshots/root-coord/database/aliases/1/a_ts450000000000000001",
            ],
        );
        assert_eq!(
            stamped,
            HashMap::from([(
                "by-dev/meta/root-coord/database/aliases/1/a".to_owned(),
                450000000000000001
            )])
        );
    }
}
