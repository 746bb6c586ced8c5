//! The task stage: what a task is (`spec`), its lifecycle (this file: create, pause, resume,
//! delete), the threads that run it (`runner`), and how it looks from outside (`status`).
//!
//! State machine, stored in the task's journal record: a create seeds the task and records it
//! Running; pause records Paused and stops its threads; resume records Running and starts them;
//! a permanent target error records Failed with the reason; delete removes the record and every
//! journal row of the task. At start-up every task recorded Running is started again.
//!
//! Crash behaviour: a create stages every channel's start before it writes the task record, so
//! a crash leaves no half-started task. A running task's threads share nothing but the journal
//! (see `runner`), so stopping them at any point loses and doubles nothing.

mod error;
pub mod failover;
mod group;
pub mod history;
mod imports;
mod lifecycle;
pub mod roles;
mod runner;
mod snapshot;
pub mod switchover;
pub use group::GroupView;
pub use snapshot::CopyView;
mod spec;
mod status;
mod verify;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tracing::{error, info, warn};

pub use error::TaskError;
pub use spec::{RbacSpec, TargetSpec, TaskSpec, TaskState};
pub use status::{AppliedPosition, ChannelPosition, ConsistencyPoint, TaskPositions, TaskStatus};

use crate::config::Config;
use crate::health::Health;
use crate::journal::{Journal, JournalError, TaskRun};
use crate::milvus_client;
use crate::model::{
    MqKind, Poison, PoisonAt, Secret, StartPosition, meta_channel, replicate_topic,
};
use crate::source::ClusterConfig;
use crate::source::meta::CollectionMeta;
use crate::source::mq::MessageQueue;
use crate::source::seed;
use crate::source::{access, watch};
use history::LagHistory;

struct Running {
    /// The run's number (`journal::TaskRun`).
    run: u64,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Owns the journal and the threads of every running task.
pub struct Supervisor {
    journal: Arc<Journal>,
    config: Config,
    runtime: Handle,
    running: Mutex<HashMap<String, Running>>,
    /// One lifecycle call (create, pause, resume, delete) at a time per task id, so that calls
    /// a retrying client repeats or races see each other's result: twenty concurrent creates
    /// of one id create it once and start one run.
    lifecycle: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Creates under way, by task id: their target and scope. Two creates of different ids at
    /// once each check the other's claim here, since neither has saved its record yet.
    creating: Mutex<HashMap<String, lifecycle::Claim>>,
    /// Transient faults each task is retrying, shown as its `reason` while it is Running.
    health: Mutex<HashMap<String, Arc<Health>>>,
    history: LagHistory,
    /// What the last verify of each task found, since the server started.
    verified: Mutex<HashMap<String, status::Verified>>,
    /// Each source cluster's message queue, made at its first use and shared by its tasks.
    queues: Mutex<HashMap<String, Arc<dyn MessageQueue>>>,
    /// The group this appliance is a member of, if any (`group.rs`).
    group: std::sync::OnceLock<Arc<crate::group::Group>>,
    /// Each owned task's owner, and the group's members, as the owner loop last saw them.
    owners: Mutex<HashMap<String, crate::group::Member>>,
    members: Mutex<Vec<crate::group::Member>>,
    /// Tasks this member took over from another (or from itself before a restart).
    takeovers: std::sync::atomic::AtomicU64,
    /// Set by `shutdown`: the process is ending.
    leaving: std::sync::atomic::AtomicBool,
}

/// How a task reaches its target: the task's own uri and token, or its cluster's.
pub(super) struct TargetAccess<'a> {
    pub uri: String,
    pub token: Secret,
    pub ca_file: Option<&'a std::path::Path>,
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

impl Supervisor {
    pub fn new(journal: Arc<Journal>, config: Config, runtime: Handle) -> Arc<Self> {
        Arc::new(Self {
            journal,
            config,
            runtime,
            running: Mutex::new(HashMap::new()),
            lifecycle: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashMap::new()),
            health: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            history: LagHistory::default(),
            queues: Mutex::new(HashMap::new()),
            group: std::sync::OnceLock::new(),
            owners: Mutex::new(HashMap::new()),
            members: Mutex::new(Vec::new()),
            takeovers: std::sync::atomic::AtomicU64::new(0),
            leaving: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The message queue of source cluster `cluster`, made at its first use.
    fn queue(&self, cluster: &str) -> Result<Arc<dyn MessageQueue>, TaskError> {
        // Nothing can leave a queue half-made: a panic elsewhere does not spoil the map.
        let mut shared = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = shared.get(cluster) {
            return Ok(queue.clone());
        }
        let queue = self.cluster(cluster)?.queue(self.runtime.clone())?;
        shared.insert(cluster.to_owned(), queue.clone());
        Ok(queue)
    }

    /// The configured cluster of this name.
    fn cluster(&self, name: &str) -> Result<&ClusterConfig, TaskError> {
        self.config
            .cluster(name)
            .ok_or_else(|| TaskError::UnknownCluster(name.to_owned()))
    }

    /// The cluster `spec` reads.
    fn source_of(&self, spec: &TaskSpec) -> Result<&ClusterConfig, TaskError> {
        self.cluster(&spec.source_cluster)
    }

    /// How `spec` reaches its target: a target named by its cluster is reached as the config
    /// says now (its uri, token and CA file), one named by uri with the task's token and the
    /// config's `[target] ca_file`.
    pub(super) fn target_of(&self, spec: &TaskSpec) -> Result<TargetAccess<'_>, TaskError> {
        let Some(name) = &spec.target.cluster else {
            return Ok(TargetAccess {
                uri: spec.target.uri.clone(),
                token: spec.target.token.clone(),
                ca_file: self.config.target.ca_file.as_deref(),
            });
        };
        let cluster = self.cluster(name)?;
        let uri = cluster
            .milvus_uri
            .clone()
            .ok_or_else(|| TaskError::NoClusterApi {
                cluster: name.clone(),
            })?;
        Ok(TargetAccess {
            uri,
            token: cluster.milvus_token.clone().unwrap_or_default(),
            ca_file: cluster
                .milvus_ca_file
                .as_deref()
                .or(self.config.target.ca_file.as_deref()),
        })
    }

    /// Every task; a running one's `reason` names the faults it is retrying, if any. A task
    /// whose record does not read is listed as Failed with the reason, so one bad record
    /// neither hides the others nor stops the server.
    pub fn tasks(&self) -> Result<Vec<TaskSpec>, TaskError> {
        Ok(self
            .journal
            .tasks()?
            .into_iter()
            .map(|(id, bytes)| match serde_json::from_slice(&bytes) {
                Ok(spec) => self.with_health(spec),
                Err(e) => TaskSpec::unreadable(id, &e.to_string()),
            })
            .collect())
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
        if let Some(group) = self.group() {
            spec.owner = self.owner_of(&spec.task_id);
            if spec.owner.as_deref() != Some(group.name.as_str()) {
                // Its owner knows how it runs.
                return spec;
            }
        }
        if matches!(spec.state, TaskState::Running | TaskState::FailingOver) {
            let problems = self.health(&spec.task_id).summary();
            spec.reason = if self.is_running(&spec.task_id) {
                problems.map(|problems| format!("retrying: {problems}"))
            } else {
                // Saved Running, with no thread: a start failed, and so did recording it.
                Some(format!(
                    "not running: the task did not start{}; resume it to try again",
                    problems.map_or_else(String::new, |p| format!(" ({p})"))
                ))
            };
        }
        spec
    }

    fn health(&self, id: &str) -> Arc<Health> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    fn save(&self, spec: &TaskSpec) -> Result<(), TaskError> {
        Ok(self.journal.put_task(&spec.task_id, &record(spec)?)?)
    }

    /// Starts every task stored as Running (after a restart).
    pub fn resume_all(self: &Arc<Self>) -> Result<(), TaskError> {
        for spec in self.tasks()? {
            match spec.state {
                // One that cannot start is recorded Failed, and the others start.
                TaskState::Running => drop(self.launch(spec)),
                TaskState::FailingOver => {
                    let id = spec.task_id.clone();
                    if let Err(err) = self.start_failover(spec) {
                        error!(task = id, %err, "cannot go on with the failover");
                        self.health(&id).problem("failover", &err);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Records the task's start on every channel of the source, then starts it. The start
    /// positions and the creation of the in-scope collections that already exist are staged
    /// before the task is saved, so a crash during create leaves no half-started task behind.
    ///
    /// Creating a task again with the same id and the same target, collections and start is
    /// not an error: the existing task is answered (`Created::Existing`), so a retried create
    /// is safe. The same id with anything else is [`TaskError::Exists`]; a task of another id
    /// (saved, or being created at the same time) that writes some of the same collections to
    /// the same target is [`TaskError::Overlaps`].
    ///
    /// A create runs to its end even when its caller goes away, and one that fails leaves
    /// nothing behind: no rows, offsets or copy records for a later create of its id.
    pub async fn create(self: &Arc<Self>, mut spec: TaskSpec) -> Result<Created, TaskError> {
        self.source_of(&spec)?;
        if spec.target.cluster.is_some() {
            spec.target.uri = self.target_of(&spec)?.uri;
        }
        let target = self.target_of(&spec)?;
        milvus_client::check("target", &target.uri, target.token.expose(), target.ca_file)
            .map_err(TaskError::InvalidTarget)?;
        let me = self.clone();
        tokio::spawn(async move { me.create_whole(spec).await })
            .await
            .map_err(|e| TaskError::Internal(format!("creating the task stopped: {e}")))?
    }

    async fn create_whole(self: &Arc<Self>, spec: TaskSpec) -> Result<Created, TaskError> {
        let _turn = self.turn(&spec.task_id).await;
        if self.journal.task(&spec.task_id)?.is_some() {
            let existing = self.task(&spec.task_id)?;
            return if existing.same_request(&spec) {
                Ok(Created::Existing(existing))
            } else {
                Err(TaskError::Exists(spec.task_id))
            };
        }
        let _claim = self.claim(&spec)?;
        if let Some(group) = self.group() {
            // The group's record, if this member has not mirrored it yet.
            if let Some(record) = group.task(&spec.task_id).await? {
                let existing: TaskSpec = serde_json::from_slice(&record)
                    .map_err(|e| TaskError::Corrupt(spec.task_id.clone(), e.to_string()))?;
                return if existing.same_request(&spec) {
                    Ok(Created::Existing(self.with_health(existing)))
                } else {
                    Err(TaskError::Exists(spec.task_id))
                };
            }
            if group.claim(&spec.task_id).await?.is_none() {
                return Err(self.owned_by_another(&spec.task_id));
            }
            self.note_owner(group, &spec.task_id);
        }
        // What a create of this id that crashed left is not this task's.
        self.journal.delete_task(&spec.task_id)?;
        let seeded = self.seed(&spec).await;
        let created = seeded.and_then(|version| self.created(spec.clone(), &version));
        if created.is_err()
            && matches!(self.journal.task(&spec.task_id), Ok(None))
            && let Err(err) = self.journal.delete_task(&spec.task_id)
        {
            error!(task = %spec.task_id, %err, "cannot remove what a failed create staged");
        }
        if let Some(group) = self.group() {
            // What is not written now the owner loop writes on its next pass: the record of a
            // task made, the release of a claim whose create failed.
            let shared = match &created {
                Ok(made) => group.put_task(&spec.task_id, &record(made.spec())?).await,
                Err(_) => group.release(&spec.task_id).await,
            };
            if let Err(err) = shared {
                warn!(task = %spec.task_id, %err, "group: the create is not shared yet");
            }
        }
        created
    }

    /// Stages a new task's start: every channel's start position and what exists of its
    /// collections. Answers the source's Milvus version.
    async fn seed(self: &Arc<Self>, spec: &TaskSpec) -> Result<String, TaskError> {
        let scope = spec.scope();
        let source = self.source_of(spec)?;
        let meta = source.meta().await?;
        let version = meta.milvus_version().await??;
        // Taken before the collections are read: the watch sees every metadata change after.
        let meta_revision = meta.revision().await?;
        // Imports completed before the task's start are no business of its own.
        let imports_seen = imports::seen_at(&meta, meta_revision).await?;
        let existing: Vec<CollectionMeta> = meta
            .collections()
            .await?
            .into_iter()
            .filter(|c| scope.contains(&c.db_name, &c.name))
            .collect();
        // Tests widen the window in which a collection can be created unlisted.
        let delay = crate::failpoint::delay("task-positions");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let replicate_channel = replicate_topic(&source.channel_prefix);
        // From `latest`, the existing collections' indexes and load state are not in what the
        // task reads: they are staged with its start on the replicate channel.
        let operations = match spec.start {
            StartPosition::Latest | StartPosition::Snapshot | StartPosition::Repair => {
                seed::operation_seeds(&meta, &existing, &replicate_channel, &scope).await?
            }
            StartPosition::Earliest => Vec::new(),
        };
        // Their aliases, partitions loaded and properties, as of before they were listed.
        let channel = meta_channel(&source.channel_prefix);
        let api = match self.source_rows(spec) {
            Ok(api) => Some(api),
            Err(TaskError::NoSourceApi(_)) => None,
            Err(err) => return Err(err),
        };
        let meta_seeds = watch::seeds(
            &meta,
            api.as_ref(),
            &existing,
            &channel,
            &scope,
            meta_revision,
        )
        .await
        .map_err(|e| match e {
            watch::WatchError::Meta(e) => TaskError::Meta(e),
            other => TaskError::Internal(format!("the source's metadata: {other}")),
        })?;
        let listed: Vec<i64> = existing.iter().map(|c| c.id).collect();
        let (source_api, copies) = match spec.start {
            StartPosition::Snapshot | StartPosition::Repair => (
                Some(api.ok_or_else(|| {
                    TaskError::NoSourceApi(self.config.table_of(&spec.source_cluster))
                })?),
                existing
                    .iter()
                    .map(|c| crate::model::CopyProgress {
                        repair: spec.start == StartPosition::Repair,
                        ..snapshot::new_copy(&scope, c)
                    })
                    .collect(),
            ),
            StartPosition::Latest | StartPosition::Earliest => (None, Vec::new()),
        };
        // Seeding is a run of its own: a thread of an earlier task of this id cannot interleave.
        let run = self.journal.begin_run(&spec.task_id)?;
        let start = seed::TaskStart {
            run: run.clone(),
            scope: scope.clone(),
            start: spec.start,
            positions: spec.positions.clone(),
            existing,
            replicate_channel,
            operations,
        };
        let (journal, queue) = (self.journal.clone(), self.queue(&spec.source_cluster)?);
        tokio::task::spawn_blocking(move || seed::stage_start(&journal, queue.as_ref(), start))
            .await
            .map_err(|e| TaskError::Internal(format!("seeding the task stopped: {e}")))??;
        seed::seed_created_meanwhile(&self.journal, &meta, &run, &scope, &listed).await?;
        let mut meta_seeds = meta_seeds;
        if spec.rbac.is_some() {
            // Before the collections' own: they are on no collection, at timestamp 0.
            let access = access::seeds(&meta, &channel, 0, meta_revision).await?;
            meta_seeds.splice(0..0, access);
        }
        let tick = meta_seeds.iter().map(|s| s.ts).max().unwrap_or(0);
        self.journal
            .stage_meta(&run, &channel, &meta_seeds, meta_revision + 1, tick)?;
        self.journal.put_imports_seen(&run, &imports_seen, &[])?;
        if let Some(source) = source_api {
            self.stage_copies(&run, &source, copies).await?;
        }
        Ok(version)
    }

    /// Saves a seeded task as Running and starts it.
    fn created(self: &Arc<Self>, mut spec: TaskSpec, version: &str) -> Result<Created, TaskError> {
        spec.state = TaskState::Running;
        crate::failpoint::hit("create-before-save");
        self.save(&spec)?;
        info!(task = %spec.task_id, target = %spec.target.uri, collections = ?spec.collections,
            start = ?spec.start, source_version = version, "task created");
        self.launch(spec.clone())?;
        Ok(Created::New(spec))
    }

    /// Starts a task saved as Running; one that cannot start is recorded Failed with the
    /// reason, so no task is shown Running with no threads.
    fn launch(self: &Arc<Self>, spec: TaskSpec) -> Result<(), TaskError> {
        let id = spec.task_id.clone();
        self.start(spec).inspect_err(|err| {
            let reason = format!("the task could not start: {err}. Resume it to try again");
            error!(task = id, %reason, "task failed");
            let failed = self.failed(&id, &reason).and_then(|spec| self.save(&spec));
            if let Err(err) = failed {
                error!(task = id, %err, "cannot record the failure");
                // Shown as the reason of a task saved Running with no thread (`with_health`).
                self.health(&id).problem(
                    "start",
                    format!("{reason}; recording that failed too: {err}"),
                );
            }
        })
    }

    /// Stops the task's readers and applier and records it as Paused; what was staged stays in
    /// the journal. Pausing a paused task changes nothing, and a Failed task stays Failed, its
    /// reason and poison kept.
    pub fn pause(&self, id: &str) -> Result<TaskSpec, TaskError> {
        self.here(id)?;
        let _turn = self.turn_blocking(id);
        let stored = self.stored(id)?;
        match stored.state {
            TaskState::FailingOver => return Err(TaskError::FailingOver(id.to_owned())),
            // Nothing runs, nor ever will: there is nothing to pause.
            _ if stored.retired() => return Ok(stored),
            _ => {}
        }
        // Stopped before the record is read: a failure its threads record meanwhile is kept.
        self.stop(id);
        let mut spec = self.stored(id)?;
        if spec.state == TaskState::Running {
            spec.state = TaskState::Paused;
            self.save(&spec)?;
            self.shared_unowned(&spec)?;
            info!(task = id, "task paused");
        }
        Ok(spec)
    }

    /// Starts a paused or failed task again from its journal: its readers continue at their
    /// stored offsets and its applier at its applied positions (replaying an in-doubt batch).
    /// Resuming a running task changes nothing.
    pub fn resume(self: &Arc<Self>, id: &str) -> Result<TaskSpec, TaskError> {
        self.here(id)?;
        let _turn = self.turn_blocking(id);
        let spec = self.stored(id)?;
        refuse_after_failover(&spec)?;
        if spec.state == TaskState::Running && self.is_running(id) {
            return Ok(spec);
        }
        self.check_no_reverse_twin(&spec)?;
        // Stopped before the record is read: an ending run's failure cannot overwrite it.
        self.stop(id);
        let mut spec = self.stored(id)?;
        spec.state = TaskState::Running;
        spec.reason = None;
        // A poison is tried again: its cause may have been fixed (on the target, say).
        spec.poison = None;
        self.save(&spec)?;
        if self.shared_unowned(&spec)? {
            info!(task = id, "task resumed: the group places it on a member");
            return Ok(spec);
        }
        self.launch(spec.clone())?;
        info!(task = id, "task resumed");
        Ok(spec)
    }

    /// What the message ids of source cluster `cluster` are.
    pub fn mq_kind(&self, cluster: &str) -> Result<MqKind, TaskError> {
        Ok(self.cluster(cluster)?.mq.kind())
    }

    fn is_running(&self, id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    /// Stops the task and removes it with every journal row of it. Its run ends with it: a
    /// thread of it still going can write nothing more.
    pub fn delete(&self, id: &str) -> Result<(), TaskError> {
        self.here(id)?;
        let _turn = self.turn_blocking(id);
        self.stop(id);
        self.history.forget(id);
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if !self.journal.delete_task(id)? {
            return Err(TaskError::NotFound(id.to_owned()));
        }
        if let Some(group) = self.group() {
            self.runtime.block_on(async {
                group.delete_task(id).await?;
                group.release(id).await
            })?;
        }
        info!(task = id, "task deleted with its journal rows");
        Ok(())
    }

    /// Stops every task's threads and waits for them.
    pub fn shutdown(&self) {
        // In a group, the owner loop starts nothing more (`leave_group` follows).
        self.leaving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let ids: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.stop(&id);
        }
    }

    /// Moves a task stopped on a poison past exactly that one, and starts it again: the
    /// operator's decision, logged. `at` must name the poison the task shows, so a client that
    /// repeats the call never skips a later one; repeated once done, it changes nothing.
    pub fn skip(self: &Arc<Self>, id: &str, at: &PoisonAt) -> Result<TaskSpec, TaskError> {
        self.here(id)?;
        let _turn = self.turn_blocking(id);
        refuse_after_failover(&self.stored(id)?)?;
        // Stopped before the record is read: an ending run's failure cannot overwrite it.
        self.stop(id);
        let mut spec = self.stored(id)?;
        let poison = match spec.poison.take() {
            Some(poison) if poison.at == *at => poison,
            None if spec.skip_approved.as_ref() == Some(at) => return Ok(spec),
            other => {
                return Err(TaskError::NotStoppedThere {
                    task: id.to_owned(),
                    at: at.to_string(),
                    stopped_on: other.map(|p| p.at.to_string()),
                });
            }
        };
        warn!(task = id, skipped = %poison, "skip approved by the operator");
        spec.skip_approved = Some(poison.at);
        spec.state = TaskState::Running;
        spec.reason = None;
        self.save(&spec)?;
        self.launch(spec.clone())?;
        Ok(spec)
    }

    /// Records the task Failed on `poison`, naming it and what the operator can do.
    fn stop_on_poison(&self, run: &TaskRun, poison: Poison) {
        let reason = format!(
            "stopped on a poison: {poison}. Nothing after it was applied. `milvus-cdc dump` shows \
             it; fix its cause and resume, or move past exactly this one with `milvus-cdc task \
             skip {}`",
            run.task()
        );
        self.fail_with(run, reason, Some(poison));
    }

    /// Records the task Failed with `reason` and tells every thread of its run to stop (the
    /// caller is one of them, so none is waited for): a failed task stages nothing more. A run
    /// that is no longer the task's current one changes nothing.
    fn fail(&self, run: &TaskRun, reason: String) {
        self.fail_with(run, reason, None)
    }

    /// Called only by the threads of `run`. Every lifecycle call that writes the record stops
    /// (and waits for) the run's threads before it reads the record, so none interleaves with
    /// this; and the record is written only while `run` is the current one, checked in the
    /// write. A failure the journal cannot record yet is tried again while the run is current,
    /// and shown meanwhile as the task's reason.
    fn fail_with(&self, run: &TaskRun, reason: String, poison: Option<Poison>) {
        let id = run.task();
        {
            let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            match running.get(id) {
                Some(current) if current.run == run.number() => {
                    current.stop.store(true, Ordering::Relaxed);
                }
                _ => return warn!(task = id, %reason, "a failure of an earlier run is ignored"),
            }
        }
        error!(task = id, %reason, "task failed");
        loop {
            let recorded = self.failed(id, &reason).and_then(|mut spec| {
                spec.poison = poison.clone();
                Ok(self.journal.put_task_of_run(run, &record(&spec)?)?)
            });
            let err = match recorded {
                Ok(()) | Err(TaskError::Journal(JournalError::StaleRun { .. })) => return,
                Err(err) => err,
            };
            error!(task = id, %err, "cannot record the failure yet; retrying");
            self.health(id).problem(
                "task",
                format!("failed, but its failure is not recorded yet ({err}): {reason}"),
            );
            if !self.is_current(run) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }

    /// The task's stored record, made Failed with `reason`.
    fn failed(&self, id: &str, reason: &str) -> Result<TaskSpec, TaskError> {
        let mut spec = self.stored(id)?;
        spec.state = TaskState::Failed;
        spec.reason = Some(reason.to_owned());
        Ok(spec)
    }

    /// Whether `run` is the task's run still listed as running.
    fn is_current(&self, run: &TaskRun) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(run.task())
            .is_some_and(|current| current.run == run.number())
    }
}

/// Refuses a lifecycle call that would read or apply again, for a task that failed over, is
/// failing over, or switched over.
fn refuse_after_failover(spec: &TaskSpec) -> Result<(), TaskError> {
    match spec.state {
        TaskState::FailedOver => Err(TaskError::FailedOver(spec.task_id.clone())),
        TaskState::FailingOver => Err(TaskError::FailingOver(spec.task_id.clone())),
        _ => match spec.switchover.as_ref().and_then(|s| s.report.as_ref()) {
            Some(report) => Err(TaskError::SwitchedOver {
                task: spec.task_id.clone(),
                reverse: report.reverse_task.clone(),
            }),
            None => Ok(()),
        },
    }
}

/// The bytes of the task's journal record: its secrets in full (`TaskSpec::record`), so every
/// write of a record goes through here.
fn record(spec: &TaskSpec) -> Result<Vec<u8>, TaskError> {
    spec.record()
        .map_err(|e| TaskError::Corrupt(spec.task_id.clone(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_task_record_fails_that_task_and_the_others_start() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path()).unwrap());
        journal
            .put_task("bad", b"{\"task_id\": \"bad\", trunc")
            .unwrap();
        let good = TaskSpec {
            state: TaskState::Paused,
            ..TaskSpec::unreadable("good".into(), "")
        };
        journal
            .put_task("good", &serde_json::to_vec(&good).unwrap())
            .unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let supervisor = Supervisor::new(journal, Config::default(), runtime.handle().clone());

        supervisor.resume_all().expect("the server starts");
        let tasks = supervisor.tasks().unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(
            (tasks[0].task_id.as_str(), tasks[0].state),
            ("bad", TaskState::Failed)
        );
        let reason = tasks[0].reason.as_deref().unwrap();
        assert!(
            reason.contains("corrupt") && reason.contains("delete the task"),
            "{reason}"
        );
        assert_eq!(tasks[1].state, TaskState::Paused);
        assert!(supervisor.status().is_ok() && supervisor.metrics_snapshot().is_ok());
        assert!(matches!(
            supervisor.resume("bad"),
            Err(TaskError::Corrupt(..))
        ));
        supervisor
            .delete("bad")
            .expect("a corrupt task can be deleted");
    }

    fn supervisor() -> (tempfile::TempDir, tokio::runtime::Runtime, Arc<Supervisor>) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path()).unwrap());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let supervisor = Supervisor::new(journal, Config::default(), runtime.handle().clone());
        (dir, runtime, supervisor)
    }

    fn stored_task(supervisor: &Supervisor, id: &str, state: TaskState, target: &str) -> TaskSpec {
        let spec = TaskSpec {
            state,
            reason: None,
            collections: vec!["*".into()],
            target: TargetSpec::at(target),
            ..TaskSpec::unreadable(id.into(), "")
        };
        supervisor.save(&spec).unwrap();
        spec
    }

    #[test]
    fn a_task_saved_running_with_no_thread_says_it_is_not_running() {
        let (_dir, _runtime, supervisor) = supervisor();
        stored_task(&supervisor, "stalled", TaskState::Running, "http://t");
        let shown = supervisor.task("stalled").unwrap();
        assert_eq!(shown.state, TaskState::Running);
        assert_eq!(
            shown.reason.as_deref(),
            Some("not running: the task did not start; resume it to try again")
        );
    }

    #[test]
    fn calls_with_ids_of_no_task_leave_no_lifecycle_lock_behind() {
        let (_dir, _runtime, supervisor) = supervisor();
        stored_task(&supervisor, "kept", TaskState::Paused, "http://t");
        for i in 0..1000 {
            let id = format!("missing-{i}");
            assert!(matches!(supervisor.pause(&id), Err(TaskError::NotFound(_))));
            assert!(matches!(
                supervisor.resume(&id),
                Err(TaskError::NotFound(_))
            ));
            assert!(matches!(
                supervisor.delete(&id),
                Err(TaskError::NotFound(_))
            ));
        }
        supervisor.pause("kept").unwrap();
        assert_eq!(supervisor.turn_locks(), 1, "only the task that exists");
        supervisor.delete("kept").unwrap();
        assert_eq!(supervisor.turn_locks(), 0);
    }

    #[test]
    fn a_create_under_way_holds_its_target_and_scope_against_another_id() {
        let (_dir, _runtime, supervisor) = supervisor();
        let first = TaskSpec {
            collections: vec!["*".into()],
            target: TargetSpec::at("http://t:19530"),
            ..TaskSpec::unreadable("first".into(), "")
        };
        let second = TaskSpec {
            task_id: "second".into(),
            target: TargetSpec::at("http://t:19530/"),
            ..first.clone()
        };
        let elsewhere = TaskSpec {
            task_id: "elsewhere".into(),
            target: TargetSpec::at("http://other:19530"),
            ..first.clone()
        };
        let claimed = supervisor.claim(&first).unwrap();
        match supervisor.claim(&second) {
            Err(TaskError::Overlaps { existing, .. }) => assert_eq!(existing, "first"),
            Err(other) => panic!("a second claim of the same scope and target: {other}"),
            Ok(_) => panic!("a second claim of the same scope and target was granted"),
        }
        let _other_target = supervisor
            .claim(&elsewhere)
            .expect("another target is free");
        drop(claimed);
        supervisor
            .claim(&second)
            .expect("free once the first create ended");
    }

    #[test]
    fn a_saved_task_holds_its_target_and_scope_against_a_new_create() {
        let (_dir, _runtime, supervisor) = supervisor();
        stored_task(&supervisor, "saved", TaskState::Paused, "http://t");
        let new = TaskSpec {
            collections: vec!["orders".into()],
            target: TargetSpec::at("http://t"),
            ..TaskSpec::unreadable("new".into(), "")
        };
        assert!(matches!(
            supervisor.claim(&new),
            Err(TaskError::Overlaps { existing, .. }) if existing == "saved"
        ));
    }

    /// Two clusters, `source` (the `[source]` table) and `backup`, each with its API.
    fn two_clusters() -> (tempfile::TempDir, tokio::runtime::Runtime, Arc<Supervisor>) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(dir.path()).unwrap());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut config = Config::default();
        config.source.milvus_uri = Some("http://a:19530".into());
        let backup = ClusterConfig {
            milvus_uri: Some("http://b:19530".into()),
            ..ClusterConfig::default()
        };
        config.clusters.insert("backup".into(), backup);
        let supervisor = Supervisor::new(journal, config, runtime.handle().clone());
        (dir, runtime, supervisor)
    }

    #[test]
    fn each_cluster_s_role_follows_its_tasks_through_a_switchover_and_a_failover() {
        use roles::ClusterRole as R;
        let (_dir, _runtime, supervisor) = two_clusters();
        let roles = |s: &Supervisor| {
            s.cluster_roles()
                .unwrap()
                .into_iter()
                .map(|c| (c.name, c.role))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            roles(&supervisor),
            [("source".into(), R::None), ("backup".into(), R::None)]
        );
        let mut forth = stored_task(&supervisor, "forth", TaskState::Running, "http://b:19530/");
        assert_eq!(
            roles(&supervisor),
            [("source".into(), R::Primary), ("backup".into(), R::Standby)]
        );
        forth.switchover = Some(Box::default());
        supervisor.save(&forth).unwrap();
        assert_eq!(roles(&supervisor)[0], ("source".into(), R::Fenced));
        // Switched over: the task paused, its reverse running.
        forth.state = TaskState::Paused;
        let at = failover::SourceTime::at(1 << 18);
        forth.switchover = Some(Box::new(switchover::SwitchoverRecord {
            report: Some(switchover::SwitchoverReport {
                new_primary: "backup".into(),
                old_primary: "source".into(),
                reverse_task: "back".into(),
                fence_ts: at.clone(),
                consistent_through: at,
                newest_write: None,
                write_outage_ms: 1,
                verified_equal: None,
                finished: String::new(),
            }),
            ..switchover::SwitchoverRecord::default()
        }));
        supervisor.save(&forth).unwrap();
        let mut back = TaskSpec {
            source_cluster: "backup".into(),
            target: TargetSpec {
                cluster: Some("source".into()),
                ..TargetSpec::at("http://a:19530")
            },
            ..stored_task(&supervisor, "back", TaskState::Running, "")
        };
        supervisor.save(&back).unwrap();
        assert_eq!(
            roles(&supervisor),
            [("source".into(), R::Standby), ("backup".into(), R::Primary)]
        );
        back.state = TaskState::FailedOver;
        supervisor.save(&back).unwrap();
        assert_eq!(
            roles(&supervisor),
            [("source".into(), R::Primary), ("backup".into(), R::Lost)]
        );
    }

    #[test]
    fn a_task_the_other_way_over_the_same_collections_is_refused_while_its_twin_runs() {
        let (_dir, _runtime, supervisor) = two_clusters();
        // From `source` to `backup`, named by its uri.
        stored_task(&supervisor, "forth", TaskState::Running, "http://b:19530/");
        let back = TaskSpec {
            source_cluster: "backup".into(),
            collections: vec!["orders".into()],
            target: TargetSpec {
                cluster: Some("source".into()),
                ..TargetSpec::at("http://a:19530")
            },
            ..TaskSpec::unreadable("back".into(), "")
        };
        assert!(matches!(
            supervisor.claim(&back),
            Err(TaskError::ReverseTwin { existing, from, to })
                if existing == "forth" && from == "source" && to == "backup"
        ));
        supervisor.pause("forth").unwrap();
        let claimed = supervisor.claim(&back);
        assert!(claimed.is_ok(), "a paused twin sends nothing back");
        drop(claimed);
        supervisor
            .save(&TaskSpec {
                state: TaskState::Running,
                ..back
            })
            .unwrap();
        assert!(matches!(
            supervisor.resume("forth"),
            Err(TaskError::ReverseTwin { existing, .. }) if existing == "back"
        ));
        assert_eq!(supervisor.task("forth").unwrap().state, TaskState::Paused);
    }

    #[test]
    fn pausing_a_failed_task_keeps_its_reason_and_poison() {
        let (_dir, _runtime, supervisor) = supervisor();
        let poison = Poison {
            at: PoisonAt::Row {
                vchannel: "v".into(),
                position: crate::model::RowPosition { ts: 7, seq: 1 },
            },
            ts: Some(7),
            error: "refused".into(),
        };
        let failed = TaskSpec {
            reason: Some("stopped on a poison".into()),
            poison: Some(poison.clone()),
            ..stored_task(&supervisor, "t", TaskState::Failed, "http://t")
        };
        supervisor.save(&failed).unwrap();

        let paused = supervisor.pause("t").unwrap();
        let stored = supervisor.task("t").unwrap();
        for spec in [paused, stored] {
            assert_eq!(spec.state, TaskState::Failed);
            assert_eq!(spec.poison.as_ref(), Some(&poison));
            assert_eq!(spec.reason.as_deref(), Some("stopped on a poison"));
        }
    }

    #[test]
    fn a_failure_recorded_by_its_run_keeps_the_task_s_credentials_and_one_of_an_ended_run_is_not_recorded()
     {
        let (_dir, _runtime, supervisor) = supervisor();
        let spec = TaskSpec {
            target: TargetSpec {
                token: crate::model::Secret::new("root:Canary-1"),
                ..TargetSpec::at("http://t")
            },
            ..stored_task(&supervisor, "t", TaskState::Running, "http://t")
        };
        supervisor.save(&spec).unwrap();
        let ended = supervisor.journal.begin_run("t").unwrap();
        let run = supervisor.journal.begin_run("t").unwrap();
        supervisor.running.lock().unwrap().insert(
            "t".into(),
            Running {
                run: run.number(),
                stop: Arc::default(),
                threads: Vec::new(),
            },
        );

        supervisor.fail(&ended, "an ended run's failure".into());
        assert_eq!(supervisor.task("t").unwrap().state, TaskState::Running);

        supervisor.fail(&run, "the target is gone".into());
        let failed = supervisor.stored("t").unwrap();
        assert_eq!(failed.state, TaskState::Failed);
        assert_eq!(failed.reason.as_deref(), Some("the target is gone"));
        assert_eq!(failed.target.token.expose(), "root:Canary-1");
    }
}
