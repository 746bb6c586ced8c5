//! The applier: drains one task's journal to the target in ordered batches, exactly once.
//!
//! Crash behaviour, per batch:
//! 1. [`Journal::begin_batch`] commits an in-flight marker naming the batch's rows.
//! 2. The target calls are made (retried while the error is transient).
//! 3. [`Journal::commit_batch`] moves the applied positions and clears the marker together.
//!
//! A crash before 1 leaves the rows pending: they are sent later, once. A crash between 1 and 3
//! leaves the marker: [`Applier::recover`] sends exactly those rows again before anything else,
//! with inserts as upserts, so rows the target already has are replaced rather than doubled;
//! deletes and DDL are idempotent by nature. A crash after 3 has nothing to redo.
//!
//! Data batches are pipelined: a thread sends them one after the other while the applier reads
//! the next batch ahead and commits the acknowledged ones, so the target never waits for the
//! journal. Step 3 of the acknowledged batches and step 1 of the next batch are then one
//! transaction, and the marker names every batch queued or being sent (each vchannel's latest
//! end). A crash at any point leaves a marker that covers every row sent or about to be sent
//! after the applied positions: the replay above sends them again as upserts.

pub mod columns;
pub mod milvus_target;
pub mod plan;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};
use tracing::{debug, info};

use crate::health::Health;
use crate::journal::{InFlightBatch, Journal, JournalError, JournalRow};
use crate::metrics::{ErrorKind, METRICS};
use crate::model::vchannel_pchannel;
use crate::model::{Change, DdlEvent, RowPosition};
use plan::{Call, PlanError, Step, next_step};

pub use crate::model::Ddl;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Worth retrying: the target is unreachable, overloaded or not ready.
    #[error("target unavailable: {0}")]
    Transient(String),
    /// Retrying cannot help: the task fails with this reason.
    #[error("target rejected the change: {0}")]
    Permanent(String),
}

/// Where changes are applied. Data calls run on a thread of their own while the applier reads
/// ahead, hence `Send`.
pub trait Target: Send {
    /// Lanes are the batches of different vchannels: independent of each other, so a target may
    /// run them concurrently; the calls of one lane go in order. `replay` marks calls the target
    /// may already have: inserts must then replace rows with the same primary keys, not add them.
    fn apply_lanes(&mut self, lanes: &[Vec<Call>], replay: bool) -> Result<(), TargetError>;
    fn apply_ddl(&mut self, ddl: &Ddl) -> Result<(), TargetError>;
    /// Why the target cannot take `ddl` yet (a load before its index exists there, a drop of a
    /// database whose collections are still being dropped, a collection re-created under a
    /// reused name while the older one's drop is still to come), or None when it can. The event
    /// then stays pending, without an in-flight marker, and the rest of the journal moves on:
    /// what it waits for may well be behind it in the same applier.
    fn not_ready(&mut self, _ddl: &Ddl) -> Result<Option<String>, TargetError> {
        Ok(None)
    }
}

/// How long an event the target is not ready for waits before it is asked again.
const NOT_READY_RECHECK: Duration = Duration::from_millis(500);

/// Events the target was not ready for, and when to ask again.
type NotReady = HashMap<(String, RowPosition), Instant>;

/// Whether the target said it was not ready for `row`'s event less than
/// [`NOT_READY_RECHECK`] ago: it is not asked again yet.
fn refused_recently(not_ready: &NotReady, row: &JournalRow) -> bool {
    not_ready
        .get(&(row.vchannel.clone(), row.position))
        .is_some_and(|&again| Instant::now() < again)
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

#[derive(Debug, Clone)]
pub struct ApplierSettings {
    pub max_batch_rows: usize,
    pub max_batch_bytes: usize,
    /// Merged target calls stay under this size (see `ApplyConfig::max_call_bytes`).
    pub max_call_bytes: usize,
    /// Keep applied rows in the journal (for inspection) instead of deleting them.
    pub retain_applied: bool,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub retry_attempts: usize,
}

impl Default for ApplierSettings {
    fn default() -> Self {
        Self {
            max_batch_rows: 512,
            max_batch_bytes: 4 << 20,
            max_call_bytes: 4 << 20,
            retain_applied: false,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            retry_attempts: 8,
        }
    }
}

pub struct Applier<'a, T: Target> {
    pub task: &'a str,
    pub journal: &'a Journal,
    pub target: T,
    pub settings: ApplierSettings,
    /// Set when the task stops: retries give up so the thread can exit promptly.
    pub stop: Arc<AtomicBool>,
    /// Where a target fault being retried is shown.
    pub health: Arc<Health>,
    /// Events the target was not ready for, and when to ask again.
    not_ready: NotReady,
}

impl<'a, T: Target> Applier<'a, T> {
    pub fn new(
        task: &'a str,
        journal: &'a Journal,
        target: T,
        settings: ApplierSettings,
        stop: Arc<AtomicBool>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            task,
            journal,
            target,
            settings,
            stop,
            health,
            not_ready: HashMap::new(),
        }
    }

    /// Re-sends the batch that was in flight when the process stopped, if any.
    pub fn recover(&mut self) -> Result<(), ApplyError> {
        let Some(batch) = self.journal.in_flight(self.task)? else {
            return Ok(());
        };
        info!(
            task = self.task,
            vchannels = batch.ends.len(),
            "replaying the in-doubt batch"
        );
        // The batch's rows, one run per vchannel in journal order, as they were cut.
        let mut runs: Vec<Vec<JournalRow>> = Vec::new();
        for (vchannel, end) in &batch.ends {
            let after = self.journal.applied(self.task, vchannel)?;
            let pending =
                self.journal
                    .rows(self.task, vchannel, after, end.ts, usize::MAX, usize::MAX)?;
            runs.push(pending.into_iter().filter(|r| r.position <= *end).collect());
        }
        if let Some(Change::Ddl(ddl)) = runs.first().and_then(|run| run.first()).map(|r| &r.change)
        {
            self.with_retries(|t, _| t.apply_ddl(ddl))?;
        } else {
            let mut lanes = Vec::new();
            for run in &runs {
                if let Step::Data { calls, .. } =
                    next_step(run, true, self.settings.max_call_bytes)?
                {
                    lanes.push(calls);
                }
            }
            self.with_retries(|t, _| t.apply_lanes(&lanes, true))?;
        }
        self.journal
            .commit_batch(self.task, &batch, self.settings.retain_applied)?;
        Ok(())
    }

    /// Applies what is next: one DDL, or a run of data batches (the next rows of every vchannel
    /// together, batch after batch) for as long as more are staged; answers whether it did any
    /// work. A run ends with every batch it sent committed and no marker left.
    pub fn step(&mut self) -> Result<bool, ApplyError> {
        let planner = self.planner(&[]);
        let planned = Instant::now();
        let Plan { data, ddl_heads } = planner.plan()?;
        METRICS.applier_stage("plan", planned);
        // A DDL whose barrier is complete goes first: the vchannels it waits for have nothing
        // before it, and data of other vchannels does not depend on it. So events are not
        // starved by a steady flow of rows elsewhere.
        if !ddl_heads.is_empty() && self.apply_ddl_heads(&planner, ddl_heads)? {
            return Ok(true);
        }
        let Some(first) = data else {
            return Ok(false);
        };
        let marked = Instant::now();
        self.journal.begin_batch(self.task, &first.marker)?;
        METRICS.applier_stage("mark", marked);
        self.send_run(first)?;
        Ok(true)
    }

    /// Sends `first`, whose marker is committed, and the batches that follow it: a thread of
    /// its own sends them one after the other while this one reads the next batch ahead, marks
    /// it and commits the batches the target acknowledged. The target never waits for the
    /// journal, and one transaction both commits and marks.
    fn send_run(&mut self, first: DataBatch) -> Result<(), ApplyError> {
        let retries = Retries {
            task: self.task,
            settings: &self.settings,
            stop: &self.stop,
            health: &self.health,
        };
        let target = &mut self.target;
        let run = Run {
            task: self.task,
            journal: self.journal,
            settings: &self.settings,
            stop: &self.stop,
            not_ready: &self.not_ready,
        };
        std::thread::scope(|scope| {
            let (queue, queued) = crossbeam_channel::bounded::<DataBatch>(PIPELINE_DEPTH);
            let (acknowledge, acknowledged) =
                crossbeam_channel::bounded::<Result<DataBatch, TargetError>>(PIPELINE_DEPTH);
            let sender = scope.spawn(move || {
                for batch in queued {
                    let sent = Instant::now();
                    let result =
                        retries.run(target, |t, in_doubt| t.apply_lanes(&batch.lanes, in_doubt));
                    METRICS.batch_seconds.observe(sent.elapsed().as_secs_f64());
                    METRICS.applier_stage("send", sent);
                    let failed = result.is_err();
                    if acknowledge.send(result.map(|()| batch)).is_err() || failed {
                        break;
                    }
                }
            });
            let result = run.drive(first, &queue, &acknowledged);
            // The sender stops after the batch it is sending; the marker covers what it leaves.
            drop(queue);
            drop(acknowledged);
            let joined = sender.join();
            result?;
            joined.map_err(|_| {
                TargetError::Transient("the thread sending batches to the target panicked".into())
            })?;
            Ok(())
        })
    }

    /// Reads the journal after the applied positions, or after `in_flight`'s ends on their
    /// vchannels.
    fn planner<'p>(&self, in_flight: &'p [(String, RowPosition)]) -> Planner<'p>
    where
        'a: 'p,
    {
        Planner::new(self.task, self.journal, &self.settings, in_flight)
    }

    /// Applies the first DDL whose barrier is complete, if any.
    fn apply_ddl_heads(
        &mut self,
        planner: &Planner,
        mut heads: Vec<JournalRow>,
    ) -> Result<bool, ApplyError> {
        let ticks = planner.ticks()?;
        // Oldest first: an index or load event must reach its collection before a later drop
        // of that collection (and a new one of the same name) does.
        heads.sort_by_key(|row| row.position);
        for row in heads {
            let Change::Ddl(ddl) = &row.change else {
                continue;
            };
            let Some(ends) = planner.applicable(&ticks, &row)? else {
                continue;
            };
            if !self.target_ready(&row, ddl)? {
                continue;
            }
            let batch = InFlightBatch { ends };
            self.journal.begin_batch(self.task, &batch)?;
            self.with_retries(|t, _| t.apply_ddl(ddl))?;
            if matches!(ddl.event, DdlEvent::Replicated { .. }) {
                crate::failpoint::hit("replicated-after-ack");
            }
            self.journal
                .commit_batch(self.task, &batch, self.settings.retain_applied)?;
            METRICS.applied(self.task, row.change.operation(), 0, 0);
            info!(task = self.task, database = %ddl.collection.db_name, collection = %ddl.collection.name,
                event = ddl_name(ddl), "DDL applied");
            return Ok(true);
        }
        Ok(false)
    }

    /// Asks the target whether it can take `ddl` now, at most every [`NOT_READY_RECHECK`] per
    /// event; a wait is shown in the task's health.
    fn target_ready(&mut self, row: &JournalRow, ddl: &Ddl) -> Result<bool, ApplyError> {
        if refused_recently(&self.not_ready, row) {
            return Ok(false);
        }
        let key = (row.vchannel.clone(), row.position);
        match self.target.not_ready(ddl)? {
            None => {
                if self.not_ready.remove(&key).is_some() {
                    self.health.resolved("target");
                }
                Ok(true)
            }
            Some(why) => {
                if !self.not_ready.contains_key(&key) {
                    info!(task = self.task, channel = %row.vchannel, event = ddl_name(ddl), %why,
                        "event waits for the target");
                }
                self.health.problem("target", format!("waiting: {why}"));
                self.not_ready
                    .insert(key, Instant::now() + NOT_READY_RECHECK);
                Ok(false)
            }
        }
    }

    fn with_retries(
        &mut self,
        call: impl FnMut(&mut T, bool) -> Result<(), TargetError>,
    ) -> Result<(), TargetError> {
        let retries = Retries {
            task: self.task,
            settings: &self.settings,
            stop: &self.stop,
            health: &self.health,
        };
        retries.run(&mut self.target, call)
    }
}

/// How target calls are retried.
struct Retries<'r> {
    task: &'r str,
    settings: &'r ApplierSettings,
    /// Set when the task stops: retries give up so the thread can exit promptly.
    stop: &'r AtomicBool,
    /// Where a fault being retried is shown.
    health: &'r Health,
}

impl Retries<'_> {
    /// Runs `call` until it succeeds, fails permanently, runs out of attempts or the task stops.
    /// The second argument tells the call whether the target may already have its data: after a
    /// transient failure it may (the request can have landed before the connection broke), so
    /// every retry is in doubt and must not add rows twice.
    fn run<T>(
        &self,
        target: &mut T,
        mut call: impl FnMut(&mut T, bool) -> Result<(), TargetError>,
    ) -> Result<(), TargetError> {
        use backon::{BlockingRetryable, ExponentialBuilder};
        let (task, stop, health) = (self.task, self.stop, self.health);
        let mut in_doubt = false;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_initial)
            .with_max_delay(self.settings.retry_max)
            .with_max_times(self.settings.retry_attempts);
        (|| {
            let result = call(target, in_doubt);
            in_doubt = true;
            result
        })
        .retry(backoff)
        .sleep(std::thread::sleep)
        .when(|e| matches!(e, TargetError::Transient(_)) && !stop.load(Ordering::Relaxed))
        .notify(|err, delay| {
            METRICS.target_retries.inc();
            METRICS.error(ErrorKind::TargetTransient);
            health.problem("target", err);
            tracing::warn!(task, %err, ?delay, "target call failed; retrying");
        })
        .call()
        .inspect(|()| health.resolved("target"))
    }
}

/// How many data batches may be on their way to the target at once: one being sent, and the
/// next one ready behind it.
const PIPELINE_DEPTH: usize = 2;

/// How long a run waits for an acknowledgment before it looks for newly staged rows again.
const STAGED_RECHECK: Duration = Duration::from_millis(10);

/// The journal side of a run of data batches (see [`Applier::send_run`]).
struct Run<'r> {
    task: &'r str,
    journal: &'r Journal,
    settings: &'r ApplierSettings,
    stop: &'r AtomicBool,
    /// Events the target was not ready for, and when to ask again.
    not_ready: &'r NotReady,
}

/// What reading ahead found.
enum ReadAhead {
    Batch(DataBatch),
    /// Nothing more is staged yet.
    Nothing,
    /// The run reads no further: a DDL heading a vchannel may be applicable once the batches
    /// in flight are acknowledged (decided with nothing in flight), or planning failed (the
    /// error shows again when the next step plans).
    End,
}

impl Run<'_> {
    /// Queues `first` and the batches after it, and commits each once acknowledged.
    ///
    /// Invariant, for crashes: a batch is queued only once the committed marker covers it, and
    /// the marker is narrowed only by the transaction that commits the acknowledged batches
    /// before it. So a crash at any point leaves a marker covering every row the target may
    /// have received past the applied positions.
    fn drive(
        &self,
        first: DataBatch,
        queue: &crossbeam_channel::Sender<DataBatch>,
        acknowledgments: &crossbeam_channel::Receiver<Result<DataBatch, TargetError>>,
    ) -> Result<(), ApplyError> {
        let sender_stopped = || TargetError::Transient("the batch sender stopped".into());
        // The markers of the batches queued or being sent, oldest first.
        let mut outstanding = VecDeque::from([first.marker.clone()]);
        queue.send(first).map_err(|_| sender_stopped())?;
        // The batches acknowledged since the last commit, as one.
        let mut acknowledged: Option<InFlightBatch> = None;
        let mut reading = true;
        // The last read ahead found nothing staged.
        let mut idle = false;
        loop {
            let room = |outstanding: &VecDeque<_>| {
                reading && outstanding.len() < PIPELINE_DEPTH && !self.stop.load(Ordering::Relaxed)
            };
            // Block for an acknowledgment only when there is nothing else to do.
            let waited = match (outstanding.is_empty(), room(&outstanding), idle) {
                (true, _, _) => Err(RecvTimeoutError::Timeout),
                (false, true, false) => acknowledgments.try_recv().map_err(|e| match e {
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
                (false, true, true) => acknowledgments.recv_timeout(STAGED_RECHECK),
                (false, false, _) => acknowledgments
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            let waited = match waited {
                Ok(ack) => Some(ack),
                Err(RecvTimeoutError::Timeout) => None,
                // The sender stops only after a failed send, which it reports first.
                Err(RecvTimeoutError::Disconnected) => return Err(sender_stopped().into()),
            };
            for ack in waited.into_iter().chain(acknowledgments.try_iter()) {
                // A failed send ends the run; the marker stays for recovery to replay.
                let batch = ack?;
                crate::failpoint::hit("apply-after-ack");
                outstanding.pop_front();
                acknowledged = Some(match acknowledged {
                    Some(earlier) => InFlightBatch {
                        ends: later_ends(&earlier.ends, &batch.marker.ends),
                    },
                    None => batch.marker.clone(),
                });
                record_applied(self.task, &batch);
            }
            // Room is judged again after the acknowledgments: a full pipeline that has just
            // emptied must read ahead, not end the run while batches are staged.
            let room = room(&outstanding);
            let next = match room {
                true => match self.read_ahead(acknowledged.iter().chain(&outstanding)) {
                    ReadAhead::Batch(batch) => Some(batch),
                    ReadAhead::Nothing => None,
                    ReadAhead::End => {
                        reading = false;
                        None
                    }
                },
                false => None,
            };
            idle = room && next.is_none();
            self.commit_and_mark(acknowledged.take(), &outstanding, next.as_ref())?;
            match next {
                Some(batch) => {
                    outstanding.push_back(batch.marker.clone());
                    queue.send(batch).map_err(|_| sender_stopped())?;
                }
                None if outstanding.is_empty() => return Ok(()),
                None => {}
            }
        }
    }

    /// The batch after `in_flight` (each vchannel read past the latest of their ends).
    fn read_ahead<'b>(&self, in_flight: impl Iterator<Item = &'b InFlightBatch>) -> ReadAhead {
        let in_flight = in_flight.fold(Vec::new(), |ends, batch| later_ends(&ends, &batch.ends));
        let planned = Instant::now();
        let planner = Planner::new(self.task, self.journal, self.settings, &in_flight);
        let found = match planner.plan() {
            Ok(Plan { data, ddl_heads }) => match self.awaits_ddl(&planner, &ddl_heads) {
                Ok(false) => data.map_or(ReadAhead::Nothing, ReadAhead::Batch),
                _ => ReadAhead::End,
            },
            Err(_) => ReadAhead::End,
        };
        METRICS.applier_stage("plan", planned);
        found
    }

    /// Whether one of `heads` may be applicable once the batches in flight are acknowledged:
    /// the run then ends so that it goes first. Others (a barrier not complete, rows it waits
    /// for still to come, a target not ready yet) let the run go on: the next step would send
    /// the same data anyway.
    fn awaits_ddl(&self, planner: &Planner, heads: &[JournalRow]) -> Result<bool, ApplyError> {
        if heads.is_empty() {
            return Ok(false);
        }
        let ticks = planner.ticks()?;
        for row in heads {
            if !refused_recently(self.not_ready, row) && planner.applicable(&ticks, row)?.is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// One transaction: commits `acknowledged`, and makes the marker cover what is still
    /// outstanding plus `next` (or clears it when nothing is).
    fn commit_and_mark(
        &self,
        acknowledged: Option<InFlightBatch>,
        outstanding: &VecDeque<InFlightBatch>,
        next: Option<&DataBatch>,
    ) -> Result<(), ApplyError> {
        let ends = outstanding
            .iter()
            .chain(next.map(|batch| &batch.marker))
            .fold(Vec::new(), |ends, batch| later_ends(&ends, &batch.ends));
        let marker = (!ends.is_empty()).then_some(InFlightBatch { ends });
        let started = Instant::now();
        match (acknowledged, marker) {
            (Some(done), marker) => {
                self.journal.commit_batch_and_begin(
                    self.task,
                    &done,
                    marker.as_ref(),
                    self.settings.retain_applied,
                )?;
                METRICS.applier_stage("commit", started);
            }
            (None, Some(marker)) if next.is_some() => {
                self.journal.begin_batch(self.task, &marker)?;
                METRICS.applier_stage("mark", started);
            }
            (None, _) => {}
        }
        Ok(())
    }
}

fn record_applied(task: &str, batch: &DataBatch) {
    let rows: u64 = batch.lanes.iter().flatten().map(Call::rows).sum();
    for call in batch.lanes.iter().flatten() {
        METRICS.applied(task, call.operation(), call.rows(), call.bytes());
    }
    METRICS.rows_applied.inc_by(rows);
    METRICS.task_rows_applied(task).inc_by(rows);
    METRICS.batch_rows.observe(rows as f64);
    METRICS.batches_applied.inc();
    METRICS
        .last_applied
        .set(crate::model::now_ms() as f64 / 1000.0);
    debug!(
        task,
        vchannels = batch.marker.ends.len(),
        rows,
        "batch applied"
    );
}

/// Per vchannel, the later of the two ends (a vchannel in either).
fn later_ends(
    a: &[(String, RowPosition)],
    b: &[(String, RowPosition)],
) -> Vec<(String, RowPosition)> {
    let mut ends = a.to_vec();
    for (vchannel, end) in b {
        match ends.iter_mut().find(|(v, _)| v == vchannel) {
            Some((_, e)) => *e = (*e).max(*end),
            None => ends.push((vchannel.clone(), *end)),
        }
    }
    ends
}

/// A data batch ready to send: its rows' end per vchannel (the in-flight marker) and its calls.
struct DataBatch {
    marker: InFlightBatch,
    lanes: Vec<Vec<Call>>,
}

struct Plan {
    data: Option<DataBatch>,
    /// DDL rows heading their vchannels.
    ddl_heads: Vec<JournalRow>,
}

/// Reads what comes next from the journal.
struct Planner<'a> {
    task: &'a str,
    journal: &'a Journal,
    max_rows: usize,
    max_bytes: usize,
    max_call_bytes: usize,
    /// The ends of a batch being sent: its vchannels are read after them.
    in_flight: &'a [(String, RowPosition)],
}

impl<'a> Planner<'a> {
    fn new(
        task: &'a str,
        journal: &'a Journal,
        settings: &ApplierSettings,
        in_flight: &'a [(String, RowPosition)],
    ) -> Self {
        Self {
            task,
            journal,
            max_rows: settings.max_batch_rows,
            max_bytes: settings.max_batch_bytes,
            max_call_bytes: settings.max_call_bytes,
            in_flight,
        }
    }

    /// Where `vchannel`'s pending rows start.
    fn after(&self, vchannel: &str) -> Result<Option<RowPosition>, ApplyError> {
        match self.in_flight.iter().find(|(v, _)| v == vchannel) {
            Some((_, end)) => Ok(Some(*end)),
            None => Ok(self.journal.applied(self.task, vchannel)?),
        }
    }

    /// The next step after the applied positions (and the batch in flight).
    fn plan(&self) -> Result<Plan, ApplyError> {
        let ticks = self.ticks()?;
        let mut ends = Vec::new();
        let mut lanes = Vec::new();
        let mut ddl_heads = Vec::new();
        for vchannel in self.journal.vchannels(self.task)? {
            let after = self.after(&vchannel)?;
            let mut rows = self.pending(&ticks, &vchannel, after, self.max_rows)?;
            let complete = rows.len() < self.max_rows
                && rows.iter().map(|r| r.encoded_len).sum::<usize>() < self.max_bytes;
            if let (false, Some(first), Some(last)) = (complete, rows.first(), rows.last())
                && first.position.ts == last.position.ts
            {
                // The limits cut one timestamp, which must go whole (an upsert's Delete is
                // applied before its Insert): read all of it, whatever its size.
                let ts = first.position.ts;
                rows =
                    self.journal
                        .rows(self.task, &vchannel, after, ts, usize::MAX, usize::MAX)?;
            }
            match next_step(&rows, complete, self.max_call_bytes)? {
                Step::Idle => {}
                Step::Data { rows, calls } => {
                    if let Some(last) = rows.last() {
                        ends.push((vchannel.clone(), last.position));
                        lanes.push(calls);
                    }
                }
                Step::Ddl(row) => ddl_heads.push(row.clone()),
            }
        }
        Ok(Plan {
            data: (!lanes.is_empty()).then_some(DataBatch {
                marker: InFlightBatch { ends },
                lanes,
            }),
            ddl_heads,
        })
    }

    /// Each physical channel's latest TimeTick.
    fn ticks(&self) -> Result<HashMap<String, u64>, ApplyError> {
        Ok(self
            .journal
            .source_offsets(self.task)?
            .into_iter()
            .map(|(p, o)| (p, o.tick))
            .collect())
    }

    fn pending(
        &self,
        ticks: &HashMap<String, u64>,
        vchannel: &str,
        after: Option<RowPosition>,
        max_rows: usize,
    ) -> Result<Vec<JournalRow>, ApplyError> {
        // Rows above the channel's tick may still be joined by rows of the same timestamp.
        let Some(tick) = vchannel_pchannel(vchannel).and_then(|p| ticks.get(p)) else {
            return Ok(Vec::new());
        };
        Ok(self
            .journal
            .rows(self.task, vchannel, after, *tick, max_rows, self.max_bytes)?)
    }

    /// True when each of `vchannels` has been applied through `ts`: no pending row at or
    /// before it, and its channel is known to be past it. Past means its tick reached `ts`, or
    /// the collection's drop, after `ts`, is staged there: a channel's ticks stop once its last
    /// collection is dropped, so the drop may never be followed by a tick.
    fn applied_through(
        &self,
        ticks: &HashMap<String, u64>,
        vchannels: &[String],
        ts: u64,
    ) -> Result<bool, ApplyError> {
        for vchannel in vchannels {
            let after = self.after(vchannel)?;
            if self
                .journal
                .first_position(self.task, vchannel, after, ts)?
                .is_some()
            {
                return Ok(false);
            }
            let ticked = vchannel_pchannel(vchannel)
                .and_then(|p| ticks.get(p))
                .is_some_and(|&tick| tick >= ts);
            let dropped_after = || -> Result<bool, ApplyError> {
                let next = self
                    .journal
                    .rows(self.task, vchannel, after, u64::MAX, 1, 0)?;
                Ok(next.first().is_some_and(|row| {
                    matches!(
                        &row.change,
                        Change::Ddl(Ddl {
                            event: DdlEvent::DropCollection,
                            ..
                        })
                    )
                }))
            };
            if !ticked && !dropped_after()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The positions of this DDL on the vchannels of its barrier, once the journal allows it to
    /// be applied: its barrier is reached and, for a replicated event, the rows it waits for are
    /// applied.
    fn applicable(
        &self,
        ticks: &HashMap<String, u64>,
        row: &JournalRow,
    ) -> Result<Option<Vec<(String, RowPosition)>>, ApplyError> {
        let Some(ends) = self.barrier_reached(ticks, row)? else {
            return Ok(None);
        };
        if let Change::Ddl(Ddl {
            event: DdlEvent::Replicated { waits_for, .. },
            ..
        }) = &row.change
            && !self.applied_through(ticks, waits_for, row.position.ts)?
        {
            return Ok(None);
        }
        Ok(Some(ends))
    }

    /// The positions of this DDL on the vchannels of its barrier, once each has it at its head
    /// or has been applied through its timestamp without it. The latter is a vchannel whose
    /// reader started after the event (start positions are taken channel by channel, or given
    /// per channel): waiting for its copy there would hold the others up for good.
    fn barrier_reached(
        &self,
        ticks: &HashMap<String, u64>,
        row: &JournalRow,
    ) -> Result<Option<Vec<(String, RowPosition)>>, ApplyError> {
        let Change::Ddl(ddl) = &row.change else {
            return Ok(None);
        };
        let mut ends = Vec::new();
        for vchannel in &ddl.barrier {
            let after = self.after(vchannel)?;
            let head = self.pending(ticks, vchannel, after, 1)?;
            match head.first() {
                Some(h) if h.position.ts == row.position.ts && h.change == row.change => {
                    ends.push((vchannel.clone(), h.position));
                }
                _ if self.applied_through(
                    ticks,
                    std::slice::from_ref(vchannel),
                    row.position.ts,
                )? =>
                {
                    debug!(task = self.task, channel = %vchannel, ts = row.position.ts,
                        "vchannel has passed the event without it: its reader started after it");
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(ends))
    }
}

fn ddl_name(ddl: &Ddl) -> &'static str {
    use crate::model::DdlEvent::*;
    match ddl.event {
        CreateCollection { .. } => "create collection",
        DropCollection => "drop collection",
        CreatePartition { .. } => "create partition",
        DropPartition { .. } => "drop partition",
        Replicated { kind, .. } => kind.operation().as_str(),
    }
}

#[cfg(test)]
mod lane_tests;
#[cfg(test)]
mod tests;
