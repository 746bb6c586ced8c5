//! The threads of a running task: one applier, one thread that finds the source's channels,
//! one reader per channel, the metadata watcher, the snapshot copier and the watcher of the
//! source's bulk inserts. They share nothing but the journal, so each can stop at any point: a
//! reader resumes at its staged offset, the watcher at its revision, the applier at its applied
//! positions, the copier at its copy's progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info_span, warn};

use super::{Running, Supervisor, TaskError, TaskSpec};
use crate::apply::milvus::MilvusTarget;
use crate::apply::{Applier, ApplierSettings, ApplyError, Isolated, SourceCatalog, TargetError};
use crate::health::Health;
use crate::journal::{JournalError, TaskRun};
use crate::metrics::{ErrorKind, METRICS};
use crate::model::{MqPosition, meta_channel};
use crate::source::ClusterConfig;
use crate::source::meta::{EtcdLookup, SourceMeta};
use crate::source::mq::MessageQueue;
use crate::source::reader::{ChannelReader, ReaderError, ReaderSettings};
use crate::source::watch::{MetaWatcher, WatchError};

/// One thread of a task's run: what it does, given the run and the flag that stops it.
pub(super) type RunThread = fn(Arc<Supervisor>, TaskSpec, TaskRun, Arc<AtomicBool>);

impl Supervisor {
    pub(super) fn stop(&self, id: &str) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(running) = running {
            running.stop.store(true, Ordering::Relaxed);
            for thread in running.threads {
                let _ = thread.join();
            }
        }
    }

    /// Starts a new run of the task; a run still going is stopped first, and the journal
    /// refuses the writes of any earlier run from now on, so a task never has two.
    pub(super) fn start(self: &Arc<Self>, spec: TaskSpec) -> Result<(), TaskError> {
        // The copier waits for copies: a bulk insert on the source starts one (the watcher).
        self.start_run(
            spec,
            &[
                Self::run_applier,
                Self::run_copier,
                Self::run_import_watcher,
                Self::run_meta_watcher,
                Self::run_channels,
            ],
        )
    }

    /// Starts a new run of the task made of `threads`, each on a thread of its own (see
    /// [`Supervisor::start`]).
    pub(super) fn start_run(
        self: &Arc<Self>,
        spec: TaskSpec,
        threads: &[RunThread],
    ) -> Result<(), TaskError> {
        self.stop(&spec.task_id);
        let run = self.journal.begin_run(&spec.task_id)?;
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(spec.task_id.clone(), Arc::default());
        // Held while the threads start, so that one failing at once finds its run listed.
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let stop = Arc::new(AtomicBool::new(false));
        let started = threads
            .iter()
            .map(|&thread| {
                let (me, task, writer, flag) =
                    (self.clone(), spec.clone(), run.clone(), stop.clone());
                std::thread::spawn(move || thread(me, task, writer, flag))
            })
            .collect();
        let running_run = Running {
            run: run.number(),
            stop,
            threads: started,
        };
        running.insert(spec.task_id, running_run);
        Ok(())
    }

    fn run_applier(self: Arc<Self>, spec: TaskSpec, run: TaskRun, stop: Arc<AtomicBool>) {
        let _span = info_span!("applier", task = %spec.task_id).entered();
        let source = match self.source_of(&spec) {
            Ok(source) => SourceCollections {
                cluster: source.clone(),
                runtime: self.runtime.clone(),
            },
            Err(err) => return self.fail(&run, err.to_string()),
        };
        let mut applier = match self.applier_of(&spec, run.clone(), &stop) {
            Ok(applier) => applier,
            Err(err) => return self.fail(&run, err.to_string()),
        };
        applier.target = applier.target.with_source(Arc::new(source));
        let health = self.health(&spec.task_id);
        let mut recovered = false;
        let mut pause = Pause::default();
        while !stop.load(Ordering::Relaxed) {
            let stages = self.journal.stages();
            let ddl_applied = applier.ddl_applied;
            let result = if recovered {
                applier.step()
            } else {
                applier.recover().map(|_| true)
            };
            if applier.ddl_applied != ddl_applied {
                self.checkpoint_soon();
            }
            match result {
                Ok(true) => {
                    recovered = true;
                    health.resolved("applier");
                    health.resolved("target");
                    pause.reset();
                }
                Ok(false) => {
                    health.resolved("applier");
                    health.resolved("target");
                    pause.reset();
                    // Woken by the next stage; the timeout catches what time alone makes
                    // applicable (a target that was not ready, a refusal that expired).
                    self.journal
                        .wait_for_stage(stages, Duration::from_millis(10));
                }
                Err(ApplyError::Target(TargetError::Permanent(reason))) => {
                    METRICS.error(ErrorKind::TargetPermanent);
                    // Which row? The batch in flight, one row at a time, tells.
                    match applier.isolate() {
                        Ok(Isolated::Poison(poison)) => {
                            return self.stop_on_poison(&applier.run, poison);
                        }
                        Ok(Isolated::NothingInFlight) => return self.fail(&applier.run, reason),
                        Ok(Isolated::Applied) => recovered = true,
                        Err(err) => {
                            warn!(%err, "cannot take the refused batch apart yet; retrying");
                            health.problem("target", &err);
                            recovered = false;
                            pause.wait(&stop);
                        }
                    }
                }
                Err(ApplyError::Journal(err @ JournalError::StaleRun { .. })) => {
                    return warn!(%err, "applier of an earlier run stopped");
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
                    pause.wait(&stop);
                    continue;
                }
            }
        }
    }

    /// The task's applier, connected to its target.
    pub(super) fn applier_of(
        &self,
        spec: &TaskSpec,
        run: TaskRun,
        stop: &Arc<AtomicBool>,
    ) -> Result<Applier<'_, MilvusTarget>, TaskError> {
        let access = self.target_of(spec)?;
        let target = MilvusTarget::connect(
            &access.uri,
            Some(access.token.expose()),
            access.ca_file,
            self.runtime.clone(),
        )?
        .with_user_password(spec.rbac.as_ref().and_then(|r| r.user_password.clone()));
        let settings = ApplierSettings {
            retain_applied: self.config.journal.retain_applied,
            max_call_bytes: self.config.apply.max_call_bytes,
            max_batch_bytes: self.config.apply.max_batch_bytes,
            ..ApplierSettings::default()
        };
        let mut applier = Applier::new(
            run,
            &self.journal,
            target,
            settings,
            stop.clone(),
            self.health(&spec.task_id),
        );
        applier.skip = spec.skip_policy();
        Ok(applier)
    }

    /// Starts a reader for each channel of the source (its DML channels and its replicate
    /// channel), including channels created after the task.
    fn run_channels(self: Arc<Self>, spec: TaskSpec, run: TaskRun, stop: Arc<AtomicBool>) {
        let _span = info_span!("channels", task = %spec.task_id).entered();
        let mut pause = Pause::default();
        let queue = loop {
            match self.queue(&spec.source_cluster) {
                Ok(queue) => break queue,
                Err(err) => {
                    METRICS.error(ErrorKind::Broker);
                    warn!(%err, "cannot reach the source's message queue; retrying");
                    self.health(&spec.task_id).problem("broker", &err);
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            pause.wait(&stop);
        };
        self.health(&spec.task_id).resolved("broker");
        let mut readers: HashMap<String, JoinHandle<()>> = HashMap::new();
        // The channels the task read before (a resume, a restart) start at once: listing the
        // broker's topics first may take tens of milliseconds that a catch-up need not wait.
        match self.journal.source_offsets(&spec.task_id) {
            Ok(recorded) => {
                let recorded = recorded.into_iter().map(|(pchannel, _)| pchannel);
                self.start_readers(&spec, &run, &stop, &queue, recorded, &mut readers);
            }
            Err(err) => warn!(%err, "cannot read the task's channels; listing them instead"),
        }
        while !stop.load(Ordering::Relaxed) {
            match queue.channels() {
                Ok(channels) => {
                    self.start_readers(&spec, &run, &stop, &queue, channels, &mut readers)
                }
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

    /// Starts a reader for each of `channels` that has none yet.
    fn start_readers(
        self: &Arc<Self>,
        spec: &TaskSpec,
        run: &TaskRun,
        stop: &Arc<AtomicBool>,
        queue: &Arc<dyn MessageQueue>,
        channels: impl IntoIterator<Item = String>,
        readers: &mut HashMap<String, JoinHandle<()>>,
    ) {
        for channel in channels {
            if !readers.contains_key(&channel)
                && self.record_channel_start(run, &channel, queue.as_ref())
            {
                let me = self.clone();
                let (task, writer, flag, queue, pchannel) = (
                    spec.clone(),
                    run.clone(),
                    stop.clone(),
                    queue.clone(),
                    channel.clone(),
                );
                readers.insert(
                    channel,
                    std::thread::spawn(move || me.run_reader(task, writer, pchannel, queue, flag)),
                );
            }
        }
    }

    /// Makes sure the channel has a stored start offset; answers whether its reader may start.
    /// A channel without one was created after the task: everything on it is new.
    fn record_channel_start(&self, run: &TaskRun, channel: &str, queue: &dyn MessageQueue) -> bool {
        let recorded = match self.journal.source_offset(run.task(), channel) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                // A channel created after the task: everything on it is new.
                let beginning = MqPosition::beginning(queue.kind());
                self.journal.stage(run, channel, &[], beginning, 0)
            }
            Err(err) => Err(err),
        };
        match recorded {
            Ok(()) => true,
            Err(err) => {
                warn!(%err, channel, "cannot record the channel's start; retrying");
                false
            }
        }
    }

    fn run_reader(
        self: Arc<Self>,
        spec: TaskSpec,
        run: TaskRun,
        pchannel: String,
        queue: Arc<dyn MessageQueue>,
        stop: Arc<AtomicBool>,
    ) {
        let _span = info_span!("reader", task = %spec.task_id, channel = %pchannel).entered();
        let source = match self.source_of(&spec) {
            Ok(source) => source,
            Err(err) => return self.fail(&run, err.to_string()),
        };
        let scope = spec.scope();
        let settings = ReaderSettings {
            task_cap_bytes: self.config.journal.max_bytes,
            ..ReaderSettings::default()
        };
        let health = self.health(&spec.task_id);
        let skip = spec.skip_policy();
        let mut pause = Pause::default();
        while !stop.load(Ordering::Relaxed) {
            let Some(meta) = self.source_meta(source, &health, &pchannel, &mut pause, &stop) else {
                continue;
            };
            let mut lookup = EtcdLookup::new(meta, self.runtime.clone());
            let reader = ChannelReader {
                run: &run,
                pchannel: &pchannel,
                queue: queue.as_ref(),
                scope: &scope,
                journal: &self.journal,
                settings: &settings,
                stop: stop.clone(),
                health: &health,
                skip: &skip,
            };
            match reader.run(&mut lookup) {
                Ok(()) => return,
                Err(ReaderError::Journal(err @ JournalError::StaleRun { .. })) => {
                    return warn!(%err, "reader of an earlier run stopped");
                }
                Err(ReaderError::Poison(poison)) => {
                    METRICS.error(ErrorKind::Reader);
                    return self.stop_on_poison(&run, poison);
                }
                Err(err @ (ReaderError::NotRetained { .. } | ReaderError::OtherTopic { .. })) => {
                    METRICS.error(ErrorKind::Reader);
                    return self.fail(&run, err.to_string());
                }
                Err(err) => {
                    METRICS.error(ErrorKind::Reader);
                    warn!(%err, "reader stopped; restarting from the stored offset");
                    health.problem(&pchannel, &err);
                    pause.wait(&stop);
                }
            }
        }
    }
}

impl Supervisor {
    /// A connection to the source's etcd for the thread of `channel`; `None` after a failed
    /// connect, shown in the task and waited out, for the caller to try again.
    fn source_meta(
        &self,
        source: &ClusterConfig,
        health: &Health,
        channel: &str,
        pause: &mut Pause,
        stop: &AtomicBool,
    ) -> Option<SourceMeta> {
        match self.runtime.block_on(source.meta()) {
            Ok(meta) => Some(meta),
            Err(err) => {
                METRICS.error(ErrorKind::SourceEtcd);
                warn!(%err, "source etcd unreachable; retrying");
                health.problem(channel, format!("source etcd: {err}"));
                pause.wait(stop);
                None
            }
        }
    }

    /// Watches the source's etcd for the changes Milvus writes to no topic (see
    /// [`crate::source::watch`]), from the revision the journal holds.
    fn run_meta_watcher(self: Arc<Self>, spec: TaskSpec, run: TaskRun, stop: Arc<AtomicBool>) {
        let source = match self.source_of(&spec) {
            Ok(source) => source,
            Err(err) => return self.fail(&run, err.to_string()),
        };
        let channel = meta_channel(&source.channel_prefix);
        let _span = info_span!("metadata", task = %spec.task_id, channel = %channel).entered();
        let scope = spec.scope();
        let health = self.health(&spec.task_id);
        let api = self.source_rows(&spec).ok();
        let mut pause = Pause::default();
        while !stop.load(Ordering::Relaxed) {
            let Some(meta) = self.source_meta(source, &health, &channel, &mut pause, &stop) else {
                continue;
            };
            let watcher = MetaWatcher {
                run: &run,
                channel: &channel,
                scope: &scope,
                journal: &self.journal,
                stop: stop.clone(),
                health: &health,
                source: api.as_ref(),
                access_control: spec.rbac.is_some(),
            };
            match self.runtime.block_on(watcher.run(&meta)) {
                Ok(()) => return,
                Err(WatchError::Journal(err @ JournalError::StaleRun { .. })) => {
                    return warn!(%err, "metadata watcher of an earlier run stopped");
                }
                Err(err @ WatchError::Compacted { .. }) => {
                    METRICS.error(ErrorKind::SourceEtcd);
                    return self.fail(&run, err.to_string());
                }
                Err(WatchError::NotSeeded) => {
                    // A task created before metadata was watched: from now on.
                    let started = self
                        .runtime
                        .block_on(meta.revision())
                        .map_err(WatchError::from)
                        .and_then(|r| {
                            Ok(self.journal.stage_meta(&run, &channel, &[], r + 1, 0)?)
                        });
                    if let Err(err) = started {
                        warn!(%err, "cannot record where the metadata watch starts; retrying");
                        pause.wait(&stop);
                    }
                }
                Err(err) => {
                    METRICS.error(ErrorKind::SourceEtcd);
                    warn!(%err, "metadata watch stopped; restarting from the stored revision");
                    health.problem(&channel, &err);
                    pause.wait(&stop);
                }
            }
        }
    }
}

/// The wait between attempts at a dependency that failed: exponential from half a second up to
/// 30 s, with jitter so that the readers of many channels do not retry in step; back to the
/// start after a success. Sleeps in short slices, so a stop is not held up.
pub(super) struct Pause {
    delays: backon::ExponentialBackoff,
}

impl Default for Pause {
    fn default() -> Self {
        use backon::BackoffBuilder;
        Self {
            delays: backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(30))
                .with_jitter()
                .without_max_times()
                .build(),
        }
    }
}

impl Pause {
    pub(super) fn wait(&mut self, stop: &AtomicBool) {
        let until =
            std::time::Instant::now() + self.delays.next().unwrap_or(Duration::from_secs(30));
        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn reset(&mut self) {
        *self = Self::default();
    }
}

/// The source's etcd, asked by the applier whether a collection the target lacks is still
/// there ([`SourceCatalog`]).
struct SourceCollections {
    cluster: ClusterConfig,
    runtime: tokio::runtime::Handle,
}

impl SourceCatalog for SourceCollections {
    fn is_live(&self, id: i64) -> Result<bool, String> {
        self.runtime
            .block_on(async {
                let meta = self.cluster.meta().await?;
                let live = meta.collections().await?;
                Ok::<_, crate::source::meta::MetaError>(live.iter().any(|c| c.id == id))
            })
            .map_err(|e| format!("the source's etcd: {e}"))
    }
}
