//! Tasks: what to replicate where, their state, and the threads that run them.
//!
//! A running task has one reader thread per physical channel and one applier thread. They
//! share nothing but the journal, so either side can stop at any point (see `journal`).

pub mod history;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tracing::{error, info, info_span, warn};

use crate::apply::milvus_target::{MilvusTarget, check_target};
use crate::apply::{Applier, ApplierSettings, ApplyError, TargetError};
use crate::config::{Config, MqConfig};
use crate::health::Health;
use crate::journal::{Journal, JournalError};
use crate::metrics::{ErrorKind, METRICS};
use crate::model::{Change, Ddl, DdlEvent, MqPosition, PulsarId, ReplicatedKind, StagedChange};
use crate::model::{DEFAULT_DB, NameMapping, Scope, StartPosition, now_ms};
use crate::model::{MqKind, encode_position};
use crate::model::{is_replicate_topic, replicate_topic, vchannel_pchannel};
use crate::source::capture::{CollectionLookup, user_fields_only};
use crate::source::kafka::{Broker, KafkaClient, KafkaError};
use crate::source::meta::{CollectionMeta, MetaError, SourceMeta};
use crate::source::mq::MqClient;
use crate::source::pulsar::{PulsarClient, PulsarError, PulsarSettings};
use crate::source::reader::{ChannelReader, ReaderSettings};
use history::{LagHistory, Sample};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum TaskState {
    Initial,
    Running,
    Paused,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSpec {
    pub uri: String,
    #[serde(default)]
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub task_id: String,
    pub target: TargetSpec,
    /// Collection names of the default database; `*` for every collection of every database.
    pub collections: Vec<String>,
    /// Collection names (`*`: all) per database (`*`: every database).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub databases: BTreeMap<String, Vec<String>>,
    pub start: StartPosition,
    /// Collections left out (names per database, `*` for all of one), even when included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub excluded: BTreeMap<String, Vec<String>>,
    /// Target names of source databases and collections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub name_mapping: Vec<NameMapping>,
    /// Explicit positions per physical channel, given at create; they take the place of
    /// `start` on their channels (collections that exist already are created on the target
    /// first, as with `latest`).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "given_positions"
    )]
    pub positions: BTreeMap<String, MqPosition>,
    pub state: TaskState,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Task records written before Pulsar positions hold a bare Kafka offset per channel.
fn given_positions<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, MqPosition>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Position(MqPosition),
        KafkaOffset(i64),
    }
    let given = BTreeMap::<String, Given>::deserialize(deserializer)?;
    Ok(given
        .into_iter()
        .map(|(channel, given)| {
            let position = match given {
                Given::Position(position) => position,
                Given::KafkaOffset(next_offset) => MqPosition::Kafka { next_offset },
            };
            (channel, position)
        })
        .collect())
}

impl TaskSpec {
    pub fn scope(&self) -> Scope {
        let everything = self.collections.iter().any(|c| c == "*")
            || self
                .databases
                .get("*")
                .is_some_and(|names| names.iter().any(|c| c == "*"));
        let pairs = |per_db: &BTreeMap<String, Vec<String>>| {
            per_db
                .iter()
                .flat_map(|(db, names)| names.iter().map(move |name| (db.clone(), name.clone())))
                .collect::<HashSet<_>>()
        };
        let included = if everything {
            Scope::all()
        } else {
            let default_db = self
                .collections
                .iter()
                .map(|name| (DEFAULT_DB.to_owned(), name.clone()));
            Scope::named(default_db.chain(pairs(&self.databases)).collect())
        };
        included
            .excluding(pairs(&self.excluded))
            .renaming(self.name_mapping.clone())
    }
}

/// A task's read position on one physical channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChannelPosition {
    pub channel: String,
    /// The same as a base64 `msg.MsgPosition`, as the reference CDC exchanges positions: give it
    /// to a new task's create (`positions`) to start it here.
    pub position: String,
    /// The next source offset to read (Kafka; -1 on Pulsar).
    pub next_offset: i64,
    /// The stored position, readable: `kafka next_offset=N` or
    /// `pulsar after ledger=L entry=E batch=B partition=P`.
    pub readable: String,
    /// The newest TimeTick staged: every change at or below it is in the journal.
    pub tick: u64,
}

/// The last journal position of one vchannel that the target acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppliedPosition {
    pub vchannel: String,
    /// Source timestamp (hybrid: physical milliseconds << 18 | logical).
    pub ts: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TaskPositions {
    pub channels: Vec<ChannelPosition>,
    pub applied: Vec<AppliedPosition>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("task {0} already exists with another target, collections or start")]
    Exists(String),
    #[error(
        "task {existing} already replicates some of these collections to {target}: the target \
         would get their rows twice. Narrow the collections, or delete task {existing} first"
    )]
    Overlaps { existing: String, target: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("source metadata: {0}")]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Pulsar(#[from] PulsarError),
    #[error("corrupt task record {0}: {1}")]
    Corrupt(String, String),
    #[error("{0}")]
    Unsupported(String),
    #[error("milvus_connect_param: {0}")]
    InvalidTarget(String),
    #[error(
        "collection {collection} starts at offset {start} of {channel}, but the broker retains that \
         channel only from offset {retained}: its oldest changes are gone. Create the task with \
         start_position \"latest\" and copy the existing data another way (for example a backup)"
    )]
    StartNotRetained {
        collection: String,
        channel: String,
        start: i64,
        retained: i64,
    },
    #[error("positions names channel {0}, which the source does not have")]
    UnknownChannel(String),
    #[error(
        "position {offset} of {channel} is outside what the broker retains there (offsets {low} \
         to {high}): the changes before it are gone or it lies in the future"
    )]
    PositionNotRetained {
        channel: String,
        offset: i64,
        low: i64,
        high: i64,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Owns the journal and the threads of every running task.
pub struct Supervisor {
    journal: Arc<Journal>,
    config: Config,
    runtime: Handle,
    running: Mutex<HashMap<String, Running>>,
    /// Transient faults each task is retrying, shown as its `reason` while it is Running.
    health: Mutex<HashMap<String, Arc<Health>>>,
    history: LagHistory,
    /// The Kafka source's metadata client, shared by every create and every task's channel
    /// listing, and never dropped: librdkafka takes about 100 ms to tear a client down, which a
    /// create would otherwise wait for.
    broker: Mutex<Option<Arc<Broker>>>,
}

/// What a create request did.
#[derive(Debug)]
pub enum Created {
    New(TaskSpec),
    /// The same task existed already.
    Existing(TaskSpec),
}

impl Created {
    pub fn spec(&self) -> &TaskSpec {
        match self {
            Created::New(spec) | Created::Existing(spec) => spec,
        }
    }
}

/// A task as the status page shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    pub reason: String,
    /// The largest apply lag over the task's vchannels, now.
    pub lag_seconds: Option<f64>,
    pub rows_per_second: Option<f64>,
    /// The last 15 minutes.
    pub history: Vec<Sample>,
}

impl Supervisor {
    pub fn new(journal: Arc<Journal>, config: Config, runtime: Handle) -> Arc<Self> {
        Arc::new(Self {
            journal,
            config,
            runtime,
            running: Mutex::new(HashMap::new()),
            health: Mutex::new(HashMap::new()),
            history: LagHistory::default(),
            broker: Mutex::new(None),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The Kafka source's metadata client, made at its first use.
    fn broker(&self, brokers: &str) -> Result<Arc<Broker>, TaskError> {
        // Nothing can leave the client half-made: a panic elsewhere does not spoil it.
        let mut shared = self.broker.lock().unwrap_or_else(PoisonError::into_inner);
        match &*shared {
            Some(broker) => Ok(broker.clone()),
            None => Ok(shared.insert(Arc::new(Broker::connect(brokers)?)).clone()),
        }
    }

    /// Every task; a running one's `reason` names the faults it is retrying, if any.
    pub fn tasks(&self) -> Result<Vec<TaskSpec>, TaskError> {
        self.journal
            .tasks()?
            .into_iter()
            .map(|(id, bytes)| {
                serde_json::from_slice(&bytes)
                    .map(|spec| self.with_health(spec))
                    .map_err(|e| TaskError::Corrupt(id, e.to_string()))
            })
            .collect()
    }

    /// One task; a running one's `reason` names the faults it is retrying, if any.
    pub fn task(&self, id: &str) -> Result<TaskSpec, TaskError> {
        self.stored(id).map(|spec| self.with_health(spec))
    }

    fn stored(&self, id: &str) -> Result<TaskSpec, TaskError> {
        let bytes = self
            .journal
            .task(id)?
            .ok_or_else(|| TaskError::NotFound(id.to_owned()))?;
        serde_json::from_slice(&bytes).map_err(|e| TaskError::Corrupt(id.to_owned(), e.to_string()))
    }

    fn with_health(&self, mut spec: TaskSpec) -> TaskSpec {
        if spec.state == TaskState::Running {
            spec.reason = self
                .health(&spec.task_id)
                .summary()
                .map(|problems| format!("retrying: {problems}"));
        }
        spec
    }

    fn health(&self, id: &str) -> Arc<Health> {
        self.health
            .lock()
            .map(|mut h| h.entry(id.to_owned()).or_default().clone())
            .unwrap_or_default()
    }

    fn save(&self, spec: &TaskSpec) -> Result<(), TaskError> {
        let bytes = serde_json::to_vec(spec)
            .map_err(|e| TaskError::Corrupt(spec.task_id.clone(), e.to_string()))?;
        Ok(self.journal.put_task(&spec.task_id, &bytes)?)
    }

    /// Starts every task stored as Running (after a restart).
    pub fn resume_all(self: &Arc<Self>) -> Result<(), TaskError> {
        for spec in self.tasks()? {
            if spec.state == TaskState::Running {
                self.start(spec);
            }
        }
        Ok(())
    }

    /// Records the task's start on every existing channel, then starts it. The start positions
    /// and the creation of the in-scope collections that already exist are staged before the
    /// task is saved, so a crash during create leaves no half-started task behind.
    ///
    /// Creating a task again with the same id and the same target, collections and start is
    /// not an error: the existing task is answered (`Created::Existing`), so a retried create
    /// is safe. The same id with anything else is [`TaskError::Exists`].
    pub async fn create(self: &Arc<Self>, spec: TaskSpec) -> Result<Created, TaskError> {
        check_target(&spec.target.uri, &spec.target.token).map_err(TaskError::InvalidTarget)?;
        if self.journal.task(&spec.task_id)?.is_some() {
            let existing = self.task(&spec.task_id)?;
            let same = existing.target == spec.target
                && existing.collections == spec.collections
                && existing.databases == spec.databases
                && existing.start == spec.start
                && existing.positions == spec.positions
                && existing.excluded == spec.excluded
                && existing.name_mapping == spec.name_mapping;
            return if same {
                Ok(Created::Existing(existing))
            } else {
                Err(TaskError::Exists(spec.task_id))
            };
        }
        let scope = spec.scope();
        let same_target =
            |uri: &str| uri.trim_end_matches('/') == spec.target.uri.trim_end_matches('/');
        if let Some(existing) = self
            .tasks()?
            .into_iter()
            .find(|t| same_target(&t.target.uri) && t.scope().overlaps(&scope))
        {
            return Err(TaskError::Overlaps {
                existing: existing.task_id,
                target: spec.target.uri,
            });
        }
        let meta = SourceMeta::connect(
            &self.config.source.etcd_endpoints,
            &self.config.source.etcd_root_path,
        )
        .await?;
        let existing: Vec<CollectionMeta> = meta
            .collections()
            .await?
            .into_iter()
            .filter(|c| scope.contains(&c.db_name, &c.name))
            .collect();
        let listed: HashSet<i64> = existing.iter().map(|c| c.id).collect();
        // Tests widen the window in which a collection can be created unlisted.
        let delay = crate::failpoint::delay("task-positions");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (prefix, start, positions) = (
            self.config.source.channel_prefix.clone(),
            spec.start,
            spec.positions.clone(),
        );
        let lane = replicate_topic(&prefix);
        // From `latest`, the existing collections' indexes and load state are not in what the
        // task reads: they are staged with it, on the replicate-msg lane, after the collections.
        let mut lane_seeds = match start {
            StartPosition::Latest => {
                existing_operation_seeds(&meta, &existing, &lane, &scope).await?
            }
            StartPosition::Earliest => Vec::new(),
        };
        let journal = self.journal.clone();
        let task_id = spec.task_id.clone();
        let broker = match &self.config.source.mq {
            MqConfig::Kafka { brokers } => self.broker(brokers)?,
            MqConfig::Pulsar { .. } => {
                let client = self.pulsar_client(&task_id);
                let channels = pulsar_channels(&meta.collections().await?, &prefix);
                if let Some(unknown) = positions.keys().find(|c| !channels.contains(c)) {
                    return Err(TaskError::UnknownChannel(unknown.clone()));
                }
                let start = PulsarStart {
                    start,
                    positions,
                    lane_seeds,
                };
                tokio::task::spawn_blocking(move || {
                    seed_pulsar(
                        &journal, &client, &task_id, &channels, &existing, start, &scope,
                    )
                })
                .await
                .map_err(|e| TaskError::Internal(format!("seeding the task stopped: {e}")))??;
                self.seed_created_meanwhile(&meta, &spec, &listed).await?;
                return self.created(spec);
            }
        };
        tokio::task::spawn_blocking(move || -> Result<(), TaskError> {
            let topics = broker.channel_topics(&prefix)?;
            if let Some(unknown) = positions.keys().find(|c| !topics.contains(c)) {
                return Err(TaskError::UnknownChannel(unknown.clone()));
            }
            for topic in topics {
                let (low, high) = broker.watermarks(&topic)?;
                let given = match positions.get(&topic) {
                    Some(MqPosition::Kafka { next_offset }) => Some(*next_offset),
                    Some(other) => {
                        return Err(TaskError::Unsupported(format!(
                            "position of {topic} is not a Kafka offset: {other}"
                        )));
                    }
                    None => None,
                };
                let (next_offset, seeds) = match (given, start) {
                    (Some(offset), _) if !(low..=high).contains(&offset) => {
                        return Err(TaskError::PositionNotRetained {
                            channel: topic,
                            offset,
                            low,
                            high,
                        });
                    }
                    (Some(offset), _) if is_replicate_topic(&topic) => {
                        (offset, std::mem::take(&mut lane_seeds))
                    }
                    (Some(offset), _) => {
                        (offset, existing_collection_seeds(&existing, &topic, &scope))
                    }
                    // The existing collections' indexes and load state are staged as seeds;
                    // operations from now on are read.
                    (None, StartPosition::Latest) if is_replicate_topic(&topic) => {
                        (high, std::mem::take(&mut lane_seeds))
                    }
                    // The topic names collections, not channels: read all it retains; capture
                    // keeps what concerns the in-scope collections (not older ones of the same
                    // name).
                    (None, StartPosition::Earliest) if is_replicate_topic(&topic) => {
                        (low, Vec::new())
                    }
                    (None, StartPosition::Latest) => {
                        (high, existing_collection_seeds(&existing, &topic, &scope))
                    }
                    // The collections' own CreateCollection messages are read from the channel.
                    (None, StartPosition::Earliest) => {
                        (earliest_offset(&existing, &topic, low, high)?, Vec::new())
                    }
                };
                journal.stage(
                    &task_id,
                    &topic,
                    &seeds,
                    MqPosition::Kafka { next_offset },
                    0,
                )?;
            }
            if !lane_seeds.is_empty() {
                // The source has not written its replicate-msg topic yet: all of it is new.
                journal.stage(
                    &task_id,
                    &lane,
                    &lane_seeds,
                    MqPosition::Kafka { next_offset: 0 },
                    0,
                )?;
            }
            Ok(())
        })
        .await
        .map_err(|e| TaskError::Internal(format!("seeding the task stopped: {e}")))??;
        self.seed_created_meanwhile(&meta, &spec, &listed).await?;
        self.created(spec)
    }

    /// Seeds the in-scope collections that etcd lists now but did not when the task's start
    /// positions were about to be taken: created meanwhile, their CreateCollection messages may
    /// lie before those positions and never be read. Where a message is read as well, the
    /// target keeps the collection the seed created.
    async fn seed_created_meanwhile(
        &self,
        meta: &SourceMeta,
        spec: &TaskSpec,
        listed: &HashSet<i64>,
    ) -> Result<(), TaskError> {
        let scope = spec.scope();
        let created: Vec<CollectionMeta> = meta
            .collections()
            .await?
            .into_iter()
            .filter(|c| !listed.contains(&c.id) && scope.contains(&c.db_name, &c.name))
            .collect();
        for collection in &created {
            info!(task = %spec.task_id, collection = %collection.name,
                "collection created while the task started: seeded");
            let pchannels: BTreeSet<&String> = collection.physical_channels.iter().collect();
            for pchannel in pchannels {
                // A channel the task has no position on yet is read from its beginning.
                let Some(offset) = self.journal.source_offset(&spec.task_id, pchannel)? else {
                    continue;
                };
                let seeds =
                    existing_collection_seeds(std::slice::from_ref(collection), pchannel, &scope);
                self.journal
                    .stage(&spec.task_id, pchannel, &seeds, offset.next, offset.tick)?;
            }
        }
        Ok(())
    }

    /// Saves a seeded task as Running and starts it.
    fn created(self: &Arc<Self>, mut spec: TaskSpec) -> Result<Created, TaskError> {
        spec.state = TaskState::Running;
        self.save(&spec)?;
        info!(task = %spec.task_id, target = %spec.target.uri, collections = ?spec.collections,
            start = ?spec.start, "task created");
        self.start(spec.clone());
        Ok(Created::New(spec))
    }

    /// Stops the task's readers and applier and records it as Paused; what was staged stays in
    /// the journal. Pausing a paused task changes nothing.
    pub fn pause(&self, id: &str) -> Result<TaskSpec, TaskError> {
        let mut spec = self.stored(id)?;
        self.stop(id);
        if spec.state != TaskState::Paused {
            spec.state = TaskState::Paused;
            self.save(&spec)?;
            info!(task = id, "task paused");
        }
        Ok(spec)
    }

    /// Starts a paused or failed task again from its journal: its readers continue at their
    /// stored offsets and its applier at its applied positions (replaying an in-doubt batch).
    /// Resuming a running task changes nothing.
    pub fn resume(self: &Arc<Self>, id: &str) -> Result<TaskSpec, TaskError> {
        let mut spec = self.stored(id)?;
        if spec.state == TaskState::Running && self.is_running(id) {
            return Ok(spec);
        }
        spec.state = TaskState::Running;
        spec.reason = None;
        self.save(&spec)?;
        self.stop(id);
        self.start(spec.clone());
        info!(task = id, "task resumed");
        Ok(spec)
    }

    /// What the source's message ids are.
    pub fn mq_kind(&self) -> MqKind {
        self.config.source.mq.kind()
    }

    /// Where the task is: per physical channel the next source offset and the newest TimeTick
    /// staged, per vchannel the position applied to the target.
    pub fn positions(&self, id: &str) -> Result<TaskPositions, TaskError> {
        self.task(id)?;
        let channels = self
            .journal
            .source_offsets(id)?
            .into_iter()
            .map(|(pchannel, offset)| {
                let next_offset = match offset.next {
                    MqPosition::Kafka { next_offset } => next_offset,
                    MqPosition::Pulsar { .. } => -1,
                };
                ChannelPosition {
                    readable: offset.next.to_string(),
                    position: encode_position(&pchannel, &offset.next, offset.tick),
                    channel: pchannel,
                    next_offset,
                    tick: offset.tick,
                }
            })
            .collect();
        Ok(TaskPositions {
            channels,
            applied: self
                .journal
                .applied_positions(id)?
                .into_iter()
                .map(|(vchannel, p)| AppliedPosition {
                    vchannel,
                    ts: p.ts,
                    seq: p.seq,
                })
                .collect(),
        })
    }

    fn is_running(&self, id: &str) -> bool {
        self.running
            .lock()
            .map(|r| r.contains_key(id))
            .unwrap_or(false)
    }

    pub fn delete(&self, id: &str) -> Result<(), TaskError> {
        self.stop(id);
        self.history.forget(id);
        if let Ok(mut health) = self.health.lock() {
            health.remove(id);
        }
        if !self.journal.delete_task(id)? {
            return Err(TaskError::NotFound(id.to_owned()));
        }
        info!(task = id, "task deleted with its journal rows");
        Ok(())
    }

    /// Samples every task's lag and applied rows every `every`, for the status page.
    pub fn start_sampling(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        std::thread::spawn(move || {
            while let Some(supervisor) = me.upgrade() {
                if let Err(err) = supervisor.sample(now_ms()) {
                    warn!(%err, "cannot sample the tasks' lag");
                }
                drop(supervisor);
                std::thread::sleep(every);
            }
        });
    }

    fn sample(&self, now_ms: u64) -> Result<(), TaskError> {
        for spec in self.tasks()? {
            let id = &spec.task_id;
            let sample = Sample {
                at_ms: now_ms,
                lag_seconds: max_lag(&crate::metrics::task_lag(&self.journal, id, now_ms)?),
                rows_applied: METRICS.task_rows_applied(id).get(),
            };
            self.history.record(id, sample);
        }
        Ok(())
    }

    /// Every task with its lag now, its throughput and its lag over the last 15 minutes.
    pub fn status(&self) -> Result<Vec<TaskStatus>, TaskError> {
        let now = now_ms();
        self.tasks()?
            .into_iter()
            .map(|spec| {
                let id = &spec.task_id;
                Ok(TaskStatus {
                    lag_seconds: max_lag(&crate::metrics::task_lag(&self.journal, id, now)?),
                    rows_per_second: self.history.rows_per_second(id),
                    history: self.history.of(id),
                    state: spec.state,
                    reason: spec.reason.clone().unwrap_or_default(),
                    task_id: spec.task_id,
                })
            })
            .collect()
    }

    /// Stops every task's threads and waits for them.
    pub fn shutdown(&self) {
        let ids: Vec<String> = self
            .running
            .lock()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            self.stop(&id);
        }
    }

    fn stop(&self, id: &str) {
        let running = self.running.lock().ok().and_then(|mut r| r.remove(id));
        if let Some(running) = running {
            running.stop.store(true, Ordering::Relaxed);
            for thread in running.threads {
                let _ = thread.join();
            }
        }
    }

    fn fail(&self, id: &str, reason: String) {
        error!(task = id, %reason, "task failed");
        if let Ok(mut spec) = self.stored(id) {
            spec.state = TaskState::Failed;
            spec.reason = Some(reason);
            if let Err(err) = self.save(&spec) {
                error!(task = id, %err, "cannot record the failure");
            }
        }
    }

    fn start(self: &Arc<Self>, spec: TaskSpec) {
        if let Ok(mut health) = self.health.lock() {
            health.insert(spec.task_id.clone(), Arc::default());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let me = self.clone();
        let (task, flag) = (spec.clone(), stop.clone());
        threads.push(std::thread::spawn(move || me.run_applier(task, flag)));
        let me = self.clone();
        let (task, flag) = (spec.clone(), stop.clone());
        threads.push(std::thread::spawn(move || me.run_channels(task, flag)));
        if let Ok(mut running) = self.running.lock() {
            running.insert(spec.task_id.clone(), Running { stop, threads });
        }
    }

    fn run_applier(self: Arc<Self>, spec: TaskSpec, stop: Arc<AtomicBool>) {
        let _span = info_span!("applier", task = %spec.task_id).entered();
        let target = match MilvusTarget::connect(
            &spec.target.uri,
            Some(&spec.target.token),
            self.runtime.clone(),
        ) {
            Ok(target) => target,
            Err(err) => return self.fail(&spec.task_id, err.to_string()),
        };
        let settings = ApplierSettings {
            retain_applied: self.config.journal.retain_applied,
            max_call_bytes: self.config.apply.max_call_bytes,
            max_batch_bytes: self.config.apply.max_batch_bytes,
            ..ApplierSettings::default()
        };
        let health = self.health(&spec.task_id);
        let mut applier = Applier::new(
            &spec.task_id,
            &self.journal,
            target,
            settings,
            stop.clone(),
            health.clone(),
        );
        let mut recovered = false;
        while !stop.load(Ordering::Relaxed) {
            let stages = self.journal.stages();
            let result = if recovered {
                applier.step()
            } else {
                applier.recover().map(|_| true)
            };
            match result {
                Ok(true) => {
                    recovered = true;
                    health.resolved("applier");
                }
                Ok(false) => {
                    health.resolved("applier");
                    // Woken by the next stage; the timeout catches what time alone makes
                    // applicable (a target that was not ready, a refusal that expired).
                    self.journal
                        .wait_for_stage(stages, Duration::from_millis(10));
                }
                Err(ApplyError::Target(TargetError::Permanent(reason))) => {
                    METRICS.error(ErrorKind::TargetPermanent);
                    return self.fail(&spec.task_id, reason);
                }
                Err(err) => {
                    // Transient: the target or the journal will come back; keep the task running.
                    METRICS.error(ErrorKind::Applier);
                    warn!(%err, "apply failed; retrying");
                    let part = match err {
                        ApplyError::Target(_) => "target",
                        _ => "applier",
                    };
                    health.problem(part, &err);
                    recovered = false;
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    /// Starts a reader for each DML channel and the replicate-msg topic, including channels
    /// created after the task.
    fn run_channels(self: Arc<Self>, spec: TaskSpec, stop: Arc<AtomicBool>) {
        let _span = info_span!("channels", task = %spec.task_id).entered();
        let mq = self.mq_client(&spec.task_id);
        let mut readers: HashMap<String, JoinHandle<()>> = HashMap::new();
        // The channels the task read before (a resume, a restart) start at once: listing the
        // broker's topics first may take tens of milliseconds that a catch-up need not wait.
        match self.journal.source_offsets(&spec.task_id) {
            Ok(recorded) => {
                let recorded = recorded.into_iter().map(|(pchannel, _)| pchannel);
                self.start_readers(&spec, &stop, &mq, recorded, &mut readers);
            }
            Err(err) => warn!(%err, "cannot read the task's channels; listing them instead"),
        }
        while !stop.load(Ordering::Relaxed) {
            match self.list_channels() {
                Ok(topics) => self.start_readers(&spec, &stop, &mq, topics, &mut readers),
                Err(err) => {
                    METRICS.error(ErrorKind::Broker);
                    warn!(%err, "cannot list the source's channels; retrying");
                }
            }
            for _ in 0..20 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for (_, reader) in readers {
            let _ = reader.join();
        }
    }

    /// Starts a reader for each of `topics` that has none yet.
    fn start_readers(
        self: &Arc<Self>,
        spec: &TaskSpec,
        stop: &Arc<AtomicBool>,
        mq: &Arc<dyn MqClient>,
        topics: impl IntoIterator<Item = String>,
        readers: &mut HashMap<String, JoinHandle<()>>,
    ) {
        for topic in topics {
            if !readers.contains_key(&topic) && self.record_channel_start(&spec.task_id, &topic) {
                let me = self.clone();
                let (task, flag, mq, channel) =
                    (spec.clone(), stop.clone(), mq.clone(), topic.clone());
                readers.insert(
                    topic,
                    std::thread::spawn(move || me.run_reader(task, channel, mq, flag)),
                );
            }
        }
    }

    /// The source's channels. Kafka lists its topics; a Pulsar client may not be allowed to list
    /// a namespace, so there the channels are the physical channels the source's collections
    /// name in etcd, and the replicate-msg topic.
    fn list_channels(&self) -> Result<Vec<String>, TaskError> {
        let prefix = &self.config.source.channel_prefix;
        match &self.config.source.mq {
            MqConfig::Kafka { brokers } => Ok(self.broker(brokers)?.channel_topics(prefix)?),
            MqConfig::Pulsar { .. } => {
                let collections = self.runtime.block_on(async {
                    SourceMeta::connect(
                        &self.config.source.etcd_endpoints,
                        &self.config.source.etcd_root_path,
                    )
                    .await?
                    .collections()
                    .await
                })?;
                Ok(pulsar_channels(&collections, prefix))
            }
        }
    }

    /// The client a task's readers open their channels with.
    fn mq_client(&self, task: &str) -> Arc<dyn MqClient> {
        match &self.config.source.mq {
            MqConfig::Kafka { brokers } => Arc::new(KafkaClient {
                brokers: brokers.clone(),
            }),
            MqConfig::Pulsar { .. } => Arc::new(self.pulsar_client(task)),
        }
    }

    fn pulsar_client(&self, task: &str) -> PulsarClient {
        let (url, token, tenant, namespace) = match &self.config.source.mq {
            MqConfig::Pulsar {
                url,
                token,
                tenant,
                namespace,
            } => (
                url.clone(),
                token.clone(),
                tenant.clone(),
                namespace.clone(),
            ),
            // Only called on a Pulsar source; an empty URL fails to connect with a clear error.
            MqConfig::Kafka { .. } => Default::default(),
        };
        PulsarClient {
            settings: PulsarSettings {
                url,
                token: std::env::var("MILVUS_CDC_PULSAR_TOKEN")
                    .ok()
                    .or(token)
                    .filter(|t| !t.is_empty()),
                tenant,
                namespace,
            },
            task: task.to_owned(),
            runtime: self.runtime.clone(),
        }
    }

    /// Makes sure the channel has a stored start offset; answers whether its reader may start.
    /// A channel without one was created after the task: everything on it is new.
    fn record_channel_start(&self, task: &str, topic: &str) -> bool {
        let recorded = match self.journal.source_offset(task, topic) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                // A channel created after the task: everything on it is new.
                let start = match self.config.source.mq {
                    MqConfig::Kafka { .. } => MqPosition::Kafka { next_offset: 0 },
                    MqConfig::Pulsar { .. } => MqPosition::Pulsar {
                        from: PulsarId::EARLIEST,
                        inclusive: true,
                    },
                };
                self.journal.stage(task, topic, &[], start, 0)
            }
            Err(err) => Err(err),
        };
        match recorded {
            Ok(()) => true,
            Err(err) => {
                warn!(%err, channel = %topic, "cannot record the channel's start; retrying");
                false
            }
        }
    }

    fn run_reader(
        self: Arc<Self>,
        spec: TaskSpec,
        pchannel: String,
        mq: Arc<dyn MqClient>,
        stop: Arc<AtomicBool>,
    ) {
        let _span = info_span!("reader", task = %spec.task_id, channel = %pchannel).entered();
        let scope = spec.scope();
        let settings = ReaderSettings {
            journal_cap_bytes: self.config.journal.max_bytes,
            ..ReaderSettings::default()
        };
        let health = self.health(&spec.task_id);
        while !stop.load(Ordering::Relaxed) {
            let meta = match self.runtime.block_on(SourceMeta::connect(
                &self.config.source.etcd_endpoints,
                &self.config.source.etcd_root_path,
            )) {
                Ok(meta) => meta,
                Err(err) => {
                    METRICS.error(ErrorKind::SourceEtcd);
                    warn!(%err, "source etcd unreachable; retrying");
                    health.problem(&pchannel, format!("source etcd: {err}"));
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            health.resolved(&pchannel);
            let mut lookup = EtcdLookup {
                meta,
                runtime: self.runtime.clone(),
                cache: HashMap::new(),
                missing: HashSet::new(),
            };
            let reader = ChannelReader {
                task: &spec.task_id,
                pchannel: &pchannel,
                mq: mq.as_ref(),
                scope: &scope,
                journal: &self.journal,
                settings: &settings,
                stop: stop.clone(),
            };
            match reader.run(&mut lookup) {
                Ok(()) => return,
                Err(err) => {
                    METRICS.error(ErrorKind::Reader);
                    warn!(%err, "reader stopped; restarting from the stored offset");
                    health.problem(&pchannel, &err);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

fn max_lag(lag: &crate::metrics::TaskLag) -> Option<f64> {
    lag.target.values().copied().reduce(f64::max)
}

/// The channels of a Pulsar source: every physical channel a collection of the source uses
/// (etcd), and the replicate-msg topic; sorted.
fn pulsar_channels(collections: &[CollectionMeta], prefix: &str) -> Vec<String> {
    collections
        .iter()
        .flat_map(|c| c.physical_channels.iter().cloned())
        .chain([crate::model::replicate_topic(prefix)])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// How a new Pulsar task starts: `start`, except on the channels `positions` names; the
/// replicate-msg lane's seeds (none from `earliest`) go with its position.
struct PulsarStart {
    start: StartPosition,
    positions: BTreeMap<String, MqPosition>,
    lane_seeds: Vec<StagedChange>,
}

/// Records where a new task starts on each channel of a Pulsar source, as `seed` the Kafka one:
/// `latest` after the newest message (collections that exist already are created on the
/// target first), `earliest` at the oldest start position Milvus recorded for the in-scope
/// collections on the channel, a given position where one is. Pulsar does not report what it
/// retains, so a start the broker no longer has cannot be refused here.
fn seed_pulsar(
    journal: &Journal,
    client: &PulsarClient,
    task: &str,
    channels: &[String],
    existing: &[CollectionMeta],
    mut start: PulsarStart,
    scope: &Scope,
) -> Result<(), TaskError> {
    // Before a topic's first message, and where Milvus has not created it yet: all that comes.
    let everything = MqPosition::Pulsar {
        from: PulsarId::EARLIEST,
        inclusive: true,
    };
    for channel in channels {
        let given = start.positions.get(channel).copied();
        if let Some(other @ MqPosition::Kafka { .. }) = given {
            return Err(TaskError::Unsupported(format!(
                "position of {channel} is not a Pulsar message id: {other}"
            )));
        }
        let (position, seeds) = if is_replicate_topic(channel) {
            let position = match (given, start.start) {
                (Some(position), _) => position,
                (None, StartPosition::Earliest) => everything,
                (None, StartPosition::Latest) => client.latest(channel).unwrap_or_else(|err| {
                    warn!(task, %channel, %err, "replicate-msg topic not readable yet");
                    everything
                }),
            };
            (position, std::mem::take(&mut start.lane_seeds))
        } else {
            match (given, start.start) {
                (Some(position), _) => (
                    position,
                    existing_collection_seeds(existing, channel, scope),
                ),
                (None, StartPosition::Latest) => (
                    client.latest(channel)?,
                    existing_collection_seeds(existing, channel, scope),
                ),
                (None, StartPosition::Earliest) => {
                    match earliest_pulsar_start(existing, channel)? {
                        Some(position) => (position, Vec::new()),
                        None => (client.latest(channel)?, Vec::new()),
                    }
                }
            }
        };
        journal.stage(task, channel, &seeds, position, 0)?;
    }
    Ok(())
}

/// The oldest start position of the collections on `pchannel`, if any lives there.
fn earliest_pulsar_start(
    collections: &[CollectionMeta],
    pchannel: &str,
) -> Result<Option<MqPosition>, TaskError> {
    let mut earliest: Option<(PulsarId, MqPosition)> = None;
    for c in collections {
        for (channel, bytes) in &c.start_positions {
            if channel != pchannel {
                continue;
            }
            let position = crate::source::pulsar::start_position(bytes)?;
            let MqPosition::Pulsar { from, .. } = position else {
                continue;
            };
            if earliest
                .as_ref()
                .is_none_or(|(e, _)| from.cmp_on_topic(e).is_lt())
            {
                earliest = Some((from, position));
            }
        }
    }
    Ok(earliest.map(|(_, position)| position))
}

/// Where an `earliest` task starts reading a channel: the oldest start position of the in-scope
/// collections on it, or the channel's end when none lives there (collections created later
/// are read as they come). A start the broker no longer retains is an error, never a later start.
fn earliest_offset(
    collections: &[CollectionMeta],
    pchannel: &str,
    low: i64,
    high: i64,
) -> Result<i64, TaskError> {
    let mut earliest: Option<(i64, &str)> = None;
    for c in collections {
        for (channel, position) in &c.start_positions {
            if channel != pchannel {
                continue;
            }
            // Milvus writes a Kafka message id as the offset, 8 bytes little-endian.
            let bytes: [u8; 8] = position.as_slice().try_into().map_err(|_| {
                TaskError::Unsupported(format!(
                    "collection {} has a start position on {pchannel} that is not a Kafka offset \
                     ({} bytes): is the source on another message queue?",
                    c.name,
                    position.len()
                ))
            })?;
            let offset = i64::from_le_bytes(bytes);
            if earliest.is_none_or(|(o, _)| offset < o) {
                earliest = Some((offset, &c.name));
            }
        }
    }
    match earliest {
        None => Ok(high),
        Some((start, collection)) if start < low => Err(TaskError::StartNotRetained {
            collection: collection.to_owned(),
            channel: pchannel.to_owned(),
            start,
            retained: low,
        }),
        Some((start, _)) => Ok(start),
    }
}

/// The CreateCollection (and CreatePartition) events that bring collections existing before the
/// task to the target, staged at timestamp 0 so they precede every row of the collection.
fn existing_collection_seeds(
    collections: &[CollectionMeta],
    pchannel: &str,
    scope: &Scope,
) -> Vec<StagedChange> {
    let mut seeds = Vec::new();
    for c in collections {
        let collection = scope.on_target(crate::model::CollectionRef {
            id: c.id,
            db_name: c.db_name.clone(),
            name: c.name.clone(),
        });
        let mut events = vec![DdlEvent::CreateCollection {
            schema: prost::Message::encode_to_vec(&user_fields_only(c.schema.clone())),
            shards_num: c.shards_num,
            consistency_level: c.consistency_level,
        }];
        events.extend(
            c.partitions
                .iter()
                .filter(|p| p.name != "_default")
                .map(|p| DdlEvent::CreatePartition {
                    partition: p.name.clone(),
                }),
        );
        for vchannel in c
            .virtual_channels
            .iter()
            .filter(|v| vchannel_pchannel(v) == Some(pchannel))
        {
            for event in &events {
                let ddl = Ddl {
                    collection: collection.clone(),
                    barrier: c.virtual_channels.clone(),
                    event: event.clone(),
                };
                seeds.push(StagedChange {
                    vchannel: vchannel.clone(),
                    ts: 0,
                    change: Change::Ddl(ddl),
                });
            }
        }
    }
    seeds
}

/// The CreateIndex and Load events that give collections existing before the task their
/// indexes and load state on the target, staged at timestamp 0 on the replicate-msg lane:
/// each waits for its collection's creation there.
async fn existing_operation_seeds(
    meta: &SourceMeta,
    collections: &[CollectionMeta],
    lane: &str,
    scope: &Scope,
) -> Result<Vec<StagedChange>, TaskError> {
    use milvus::proto::common::KeyValuePair;
    use milvus::proto::milvus::{CreateIndexRequest, LoadCollectionRequest};
    let mut seeds = Vec::new();
    for c in collections {
        let event = |kind, request: Vec<u8>| StagedChange {
            vchannel: lane.to_owned(),
            ts: 0,
            change: Change::Ddl(Ddl {
                collection: scope.on_target(crate::model::CollectionRef {
                    id: c.id,
                    db_name: c.db_name.clone(),
                    name: c.name.clone(),
                }),
                barrier: vec![lane.to_owned()],
                event: DdlEvent::Replicated {
                    kind,
                    request,
                    waits_for: c.virtual_channels.clone(),
                },
            }),
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
            seeds.push(event(
                ReplicatedKind::CreateIndex,
                prost::Message::encode_to_vec(&request),
            ));
        }
        if let Some(replica_number) = meta.loaded_replicas(c.id).await? {
            let request = LoadCollectionRequest {
                db_name: c.db_name.clone(),
                collection_name: c.name.clone(),
                replica_number,
                ..Default::default()
            };
            seeds.push(event(
                ReplicatedKind::Load,
                prost::Message::encode_to_vec(&request),
            ));
        }
    }
    Ok(seeds)
}

/// Collection metadata from the source's etcd, cached. A collection's metadata may land in etcd
/// a little after its first message, so a miss is retried briefly before it is remembered.
struct EtcdLookup {
    meta: SourceMeta,
    runtime: Handle,
    cache: HashMap<i64, CollectionMeta>,
    missing: HashSet<i64>,
}

impl CollectionLookup for EtcdLookup {
    fn collection(&mut self, id: i64) -> Option<CollectionMeta> {
        if let Some(found) = self.cache.get(&id) {
            return Some(found.clone());
        }
        if self.missing.contains(&id) {
            return None;
        }
        for _ in 0..10 {
            match self.runtime.block_on(self.meta.collection(id)) {
                Ok(Some(found)) => {
                    info!(collection = %found.name, id, "collection metadata loaded");
                    self.cache.insert(id, found.clone());
                    return Some(found);
                }
                Ok(None) => {}
                Err(err) => warn!(%err, id, "cannot read collection metadata"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.missing.insert(id);
        None
    }

    fn collection_named(&mut self, db_name: &str, name: &str) -> Option<CollectionMeta> {
        // Not cached: a name may be dropped and reused at any time, and these events are rare.
        // The collection exists before any operation on it is written, so only an etcd fault
        // is retried.
        for _ in 0..10 {
            match self
                .runtime
                .block_on(self.meta.collection_named(db_name, name))
            {
                Ok(found) => {
                    if let Some(found) = &found {
                        self.cache.insert(found.id, found.clone());
                    }
                    return found;
                }
                Err(err) => warn!(%err, collection = name, database = db_name,
                    "cannot read collection metadata"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{CollectionMeta, TaskError, TaskSpec, earliest_offset};
    use crate::model::Scope;

    fn spec(collections: &[&str], databases: &[(&str, &[&str])]) -> TaskSpec {
        serde_json::from_value(serde_json::json!({
            "task_id": "t", "target": { "uri": "http://x" }, "collections": collections,
            "databases": databases.iter().map(|(db, names)| (db.to_string(), names.to_vec()))
                .collect::<std::collections::BTreeMap<_, _>>(),
            "start": "latest", "state": "Running"
        }))
        .unwrap()
    }

    #[test]
    fn a_star_collection_or_database_star_star_is_everything() {
        assert_eq!(spec(&["*"], &[]).scope(), Scope::all());
        assert_eq!(spec(&[], &[("*", &["*"])]).scope(), Scope::all());
    }

    #[test]
    fn collection_infos_name_the_default_database_and_db_collections_the_others() {
        let scope = spec(&["a"], &[("sales", &["*"]), ("hr", &["people"])]).scope();
        assert!(scope.contains("default", "a"));
        assert!(scope.contains("sales", "a"), "every collection of sales");
        assert!(scope.contains("sales", "orders"));
        assert!(scope.contains("hr", "people"));
        assert!(!scope.contains("hr", "salaries"));
        assert!(!scope.contains("default", "orders"));
    }

    #[test]
    fn a_spec_stored_before_databases_existed_still_reads() {
        let old = r#"{"task_id":"t","target":{"uri":"http://x"},"collections":["a"],"start":"latest","state":"Paused"}"#;
        let spec: TaskSpec = serde_json::from_str(old).unwrap();
        assert!(spec.databases.is_empty());
        assert!(spec.scope().contains("default", "a"));
    }

    const P0: &str = "by-dev-rootcoord-dml_0";

    fn starting_at(name: &str, channel: &str, offset: i64) -> CollectionMeta {
        CollectionMeta {
            name: name.into(),
            start_positions: vec![(channel.into(), offset.to_le_bytes().to_vec())],
            ..Default::default()
        }
    }

    #[test]
    fn earliest_starts_at_the_oldest_in_scope_collection_of_the_channel() {
        let collections = [
            starting_at("b", P0, 500),
            starting_at("a", P0, 120),
            starting_at("elsewhere", "by-dev-rootcoord-dml_1", 3),
        ];
        assert_eq!(earliest_offset(&collections, P0, 100, 900).ok(), Some(120));
    }

    #[test]
    fn a_channel_without_in_scope_collections_starts_at_its_end() {
        let collections = [starting_at("elsewhere", "by-dev-rootcoord-dml_1", 3)];
        assert_eq!(earliest_offset(&collections, P0, 100, 900).ok(), Some(900));
    }

    #[test]
    fn a_task_record_with_bare_kafka_offsets_still_reads() {
        let spec = r#"{"task_id":"t","target":{"uri":"http://t:19530"},"collections":["*"],
            "start":"latest","positions":{"dml_0":42},"state":"Running"}"#;
        let spec: TaskSpec = serde_json::from_str(spec).unwrap();
        assert_eq!(
            spec.positions["dml_0"],
            crate::model::MqPosition::Kafka { next_offset: 42 }
        );
        let again: TaskSpec = serde_json::from_slice(&serde_json::to_vec(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn a_start_the_broker_no_longer_retains_is_refused_not_moved_later() {
        let collections = [starting_at("old", P0, 40)];
        match earliest_offset(&collections, P0, 100, 900) {
            Err(TaskError::StartNotRetained {
                collection,
                start: 40,
                retained: 100,
                ..
            }) => assert_eq!(collection, "old"),
            other => panic!("expected StartNotRetained, got {other:?}"),
        }
    }

    #[test]
    fn a_start_position_that_is_not_a_kafka_offset_is_refused() {
        let mut c = starting_at("c", P0, 0);
        c.start_positions[0].1 = vec![1, 2, 3];
        assert!(matches!(
            earliest_offset(&[c], P0, 0, 10),
            Err(TaskError::Unsupported(_))
        ));
    }

    fn pulsar_start(name: &str, channel: &str, ledger: u64, entry: u64) -> CollectionMeta {
        use prost::Message as _;
        let id = pulsar::proto::MessageIdData {
            ledger_id: ledger,
            entry_id: entry,
            batch_index: Some(0),
            ..Default::default()
        };
        CollectionMeta {
            name: name.into(),
            physical_channels: vec![channel.into()],
            start_positions: vec![(channel.into(), id.encode_to_vec())],
            ..Default::default()
        }
    }

    #[test]
    fn a_pulsar_earliest_start_is_the_oldest_message_id_of_the_channel_included() {
        use crate::model::{MessageId, MqPosition, PulsarId};
        let collections = [
            pulsar_start("b", P0, 4, 20),
            pulsar_start("a", P0, 3, 900),
            pulsar_start("elsewhere", "by-dev-rootcoord-dml_1", 1, 1),
        ];
        let start = super::earliest_pulsar_start(&collections, P0)
            .unwrap()
            .unwrap();
        let a = PulsarId {
            ledger: 3,
            entry: 900,
            batch: -1,
            partition: -1,
        };
        assert!(start.admits(&MessageId::Pulsar(a)).unwrap());
        assert_eq!(
            start,
            MqPosition::Pulsar {
                from: a,
                inclusive: true
            }
        );
        assert!(
            super::earliest_pulsar_start(&collections, "by-dev-rootcoord-dml_2")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn pulsar_channels_are_the_collections_physical_channels_and_the_replicate_topic() {
        let collections = [
            pulsar_start("a", "by-dev-rootcoord-dml_1", 1, 1),
            pulsar_start("b", "by-dev-rootcoord-dml_0", 1, 1),
            pulsar_start("c", "by-dev-rootcoord-dml_1", 1, 1),
        ];
        assert_eq!(
            super::pulsar_channels(&collections, "by-dev"),
            [
                "by-dev-replicate-msg",
                "by-dev-rootcoord-dml_0",
                "by-dev-rootcoord-dml_1"
            ]
        );
    }
}
