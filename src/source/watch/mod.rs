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
//!
//! Files: `classify.rs` reads what one etcd key change means ([`MetaEvent`]); `request.rs`
//! makes an event the request the target is sent; `seeds.rs` stages what a new task needs of
//! the collections that already exist; this file watches and stages.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::EventType;
use tracing::info;

use super::access;
use super::meta::{MetaError, SourceMeta};
use crate::health::Health;
use crate::journal::{Journal, JournalError, TaskRun};
use crate::milvus_client::{ReadError, RowReader};
use crate::model::{Change, Scope, StagedChange, now_ms};

mod classify;
mod request;
mod seeds;

pub use classify::{classify, stamps};
pub use seeds::seeds;

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

impl MetaEvent {
    /// The source collection the event is about.
    pub fn collection_id(&self) -> i64 {
        match self {
            MetaEvent::AliasSet { collection_id, .. }
            | MetaEvent::AliasDropped { collection_id, .. }
            | MetaEvent::PartitionLoaded { collection_id, .. }
            | MetaEvent::PartitionReleased { collection_id, .. }
            | MetaEvent::CollectionReleased { collection_id, .. }
            | MetaEvent::CollectionLoadRecorded { collection_id }
            | MetaEvent::CollectionAltered { collection_id }
            | MetaEvent::CollectionRenamed { collection_id, .. } => *collection_id,
        }
    }
}

/// A key/value of a watch event: the key, its value after (None when deleted), before.
pub struct KeyChange<'a> {
    pub key: &'a str,
    pub value: Option<&'a [u8]>,
    pub prev: Option<&'a [u8]>,
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
}
