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
//! Data batches are pipelined: while one batch's calls run, the previous batch's step 3 and the
//! next batch's step 1 are one transaction, so the marker then names both the batch being sent
//! and the next one (each vchannel's later end). A crash at any point leaves a marker that
//! covers every row sent or about to be sent after the applied positions: the replay above
//! sends them again as upserts.

pub mod columns;
pub mod milvus_target;
pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info};

use crate::health::Health;
use crate::journal::{
    Change, DdlEvent, InFlightBatch, Journal, JournalError, JournalRow, RowPosition,
};
use crate::metrics::{ErrorKind, METRICS};
use crate::source::meta::vchannel_pchannel;
use plan::{Call, PlanError, Step, next_step};

pub use crate::journal::Ddl;

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
    not_ready: HashMap<(String, RowPosition), Instant>,
    /// The data batch read while the previous one was sent; the marker covers it already.
    next: Option<DataBatch>,
    /// A batch the target acknowledged whose applied positions are not committed yet: that
    /// commit overlaps the sending of `next`. Only ever set together with `next`.
    acknowledged: Option<InFlightBatch>,
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
            next: None,
            acknowledged: None,
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

    /// Applies at most one batch (the next rows of every vchannel together, or one DDL); answers
    /// whether it did any work.
    pub fn step(&mut self) -> Result<bool, ApplyError> {
        let batch = match self.next.take() {
            Some(batch) => batch,
            None => {
                let planner = self.planner(&[]);
                let planned = Instant::now();
                let Plan { data, ddl_heads } = planner.plan()?;
                METRICS.applier_stage("plan", planned);
                // A DDL whose barrier is complete goes first: the vchannels it waits for have
                // nothing before it, and data of other vchannels does not depend on it. So
                // events are not starved by a steady flow of rows elsewhere.
                if !ddl_heads.is_empty() && self.apply_ddl_heads(&planner, ddl_heads)? {
                    return Ok(true);
                }
                let Some(batch) = data else {
                    return Ok(false);
                };
                let marked = Instant::now();
                self.journal.begin_batch(self.task, &batch.marker)?;
                METRICS.applier_stage("mark", marked);
                batch
            }
        };
        let sent = Instant::now();
        let acknowledged = self.acknowledged.take();
        // What is in flight from here on: the previous batch until its commit, and this one.
        let in_flight = match &acknowledged {
            Some(previous) => later_ends(&previous.ends, &batch.marker.ends),
            None => batch.marker.ends.clone(),
        };
        let planner = self.planner(&in_flight);
        let retries = Retries {
            task: self.task,
            settings: &self.settings,
            stop: &self.stop,
            health: &self.health,
        };
        let (journal, task, retain) = (self.journal, self.task, self.settings.retain_applied);
        let target = &mut self.target;
        let (sent_result, next) = std::thread::scope(|scope| {
            let sender = scope
                .spawn(|| retries.run(target, |t, in_doubt| t.apply_lanes(&batch.lanes, in_doubt)));
            let read_ahead = || -> Result<Option<DataBatch>, ApplyError> {
                let planned = Instant::now();
                // The next batch follows at once only when no DDL heads a vchannel: those are
                // decided with nothing in flight. A planning error shows again when the next
                // step plans.
                let next = match planner.plan() {
                    Ok(Plan {
                        data: Some(next),
                        ddl_heads,
                    }) if ddl_heads.is_empty() => Some(next),
                    _ => None,
                };
                METRICS.applier_stage("plan", planned);
                let marked = Instant::now();
                let marker = next.as_ref().map(|next| InFlightBatch {
                    ends: later_ends(&batch.marker.ends, &next.marker.ends),
                });
                match (&acknowledged, &marker) {
                    (Some(previous), _) => journal.commit_batch_and_begin(
                        task,
                        previous,
                        Some(marker.as_ref().unwrap_or(&batch.marker)),
                        retain,
                    )?,
                    (None, Some(marker)) => journal.begin_batch(task, marker)?,
                    (None, None) => {}
                }
                METRICS.applier_stage("mark", marked);
                Ok(next)
            };
            let next = read_ahead();
            (sender.join(), next)
        });
        sent_result.map_err(|_| {
            TargetError::Transient("the thread sending a batch to the target panicked".into())
        })??;
        METRICS.batch_seconds.observe(sent.elapsed().as_secs_f64());
        METRICS.applier_stage("send", sent);
        crate::failpoint::hit("apply-after-ack");
        match next? {
            // Committed while the next batch is sent.
            Some(next) => {
                self.acknowledged = Some(batch.marker.clone());
                self.next = Some(next);
            }
            None => {
                let committed = Instant::now();
                self.journal
                    .commit_batch(self.task, &batch.marker, retain)?;
                METRICS.applier_stage("commit", committed);
            }
        }
        let rows: u64 = batch.lanes.iter().flatten().map(Call::rows).sum();
        for call in batch.lanes.iter().flatten() {
            METRICS.applied(self.task, call.operation(), call.rows(), call.bytes());
        }
        METRICS.rows_applied.inc_by(rows);
        METRICS.task_rows_applied(self.task).inc_by(rows);
        METRICS.batch_rows.observe(rows as f64);
        METRICS.batches_applied.inc();
        debug!(
            task = self.task,
            vchannels = batch.marker.ends.len(),
            rows,
            "batch applied"
        );
        Ok(true)
    }

    /// Commits the acknowledged batch before the applier stops, and clears the marker: the batch
    /// read ahead was not sent, so it need not be replayed.
    pub fn finish(&mut self) -> Result<(), ApplyError> {
        self.next = None;
        if let Some(batch) = self.acknowledged.take() {
            self.journal
                .commit_batch(self.task, &batch, self.settings.retain_applied)?;
        }
        Ok(())
    }

    /// Reads the journal after the applied positions, or after `in_flight`'s ends on their
    /// vchannels.
    fn planner<'p>(&self, in_flight: &'p [(String, RowPosition)]) -> Planner<'p>
    where
        'a: 'p,
    {
        Planner {
            task: self.task,
            journal: self.journal,
            max_rows: self.settings.max_batch_rows,
            max_bytes: self.settings.max_batch_bytes,
            max_call_bytes: self.settings.max_call_bytes,
            in_flight,
        }
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
            let Some(ends) = planner.barrier_reached(&ticks, &row)? else {
                continue;
            };
            if let DdlEvent::Replicated { waits_for, .. } = &ddl.event
                && !planner.applied_through(&ticks, waits_for, row.position.ts)?
            {
                continue;
            }
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
        let key = (row.vchannel.clone(), row.position);
        if self
            .not_ready
            .get(&key)
            .is_some_and(|&again| Instant::now() < again)
        {
            return Ok(false);
        }
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

impl Planner<'_> {
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

    /// The positions of this DDL on every vchannel of its barrier, once each has it at its head.
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
                _ => return Ok(None),
            }
        }
        Ok(Some(ends))
    }
}

fn ddl_name(ddl: &Ddl) -> &'static str {
    use crate::journal::DdlEvent::*;
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
