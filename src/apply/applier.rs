//! The [`Applier`]: replays what a crash left in flight, then applies step after step: one DDL
//! whose barrier is complete, or a run of data batches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use tracing::info;

use super::calls::{Step, next_step};
use super::order::{DataBatch, Due, Holds, NOT_READY_RECHECK, NotReady, Pending, refused_recently};
use super::retry::Retries;
use super::run::Run;
use super::{ApplierSettings, ApplyError, Ddl, Target, TargetError};
use crate::health::Health;
use crate::journal::{InFlightBatch, Journal, JournalRow, TaskRun};
use crate::metrics::METRICS;
use crate::model::{Change, DdlEvent, SkipPolicy};

/// Applies one task's journal to `target`.
pub struct Applier<'a, T: Target> {
    /// The run of the task this applier belongs to: every journal write checks it.
    pub run: TaskRun,
    pub journal: &'a Journal,
    pub target: T,
    pub settings: ApplierSettings,
    /// Set when the task stops: retries give up so the thread can exit promptly.
    pub stop: Arc<AtomicBool>,
    /// Where a target fault being retried is shown.
    pub health: Arc<Health>,
    /// Which rows the target refuses may be passed over (`isolate`).
    pub skip: SkipPolicy,
    /// Events the target was not ready for, and when to ask again.
    not_ready: NotReady,
    /// DDL rows applied so far: a group's owner checkpoints after each (`task::group`).
    pub ddl_applied: u64,
}

impl<'a, T: Target> Applier<'a, T> {
    pub fn new(
        run: TaskRun,
        journal: &'a Journal,
        target: T,
        settings: ApplierSettings,
        stop: Arc<AtomicBool>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            run,
            journal,
            target,
            settings,
            stop,
            health,
            skip: SkipPolicy::default(),
            not_ready: HashMap::new(),
            ddl_applied: 0,
        }
    }

    /// Re-sends the batch that was in flight when the process stopped, if any, and commits it.
    ///
    /// To be called before the first [`step`](Self::step). Invariant: it sends exactly the
    /// rows the marker covers (each vchannel read from its applied position to its end in the
    /// marker, cut as they were), as a replay: the target may have them already, so inserts
    /// replace rows rather than add them. A DDL in flight is sent again alone.
    pub fn recover(&mut self) -> Result<(), ApplyError> {
        let Some(batch) = self.journal.in_flight(self.run.task())? else {
            return Ok(());
        };
        info!(
            task = self.run.task(),
            vchannels = batch.ends.len(),
            "replaying the in-doubt batch"
        );
        let rows_per_vchannel = self.marked_rows(&batch)?;
        let first = rows_per_vchannel.first().and_then(|rows| rows.first());
        if let Some(Change::Ddl(ddl)) = first.map(|r| &r.change) {
            self.with_retries(|t, _| t.apply_ddl(ddl))?;
        } else {
            let holds = Holds::read(self.journal, self.run.task())?;
            let mut per_vchannel = Vec::new();
            for rows in &rows_per_vchannel {
                let in_copy = rows
                    .first()
                    .map_or(0, |r| holds.in_copy_through(&r.vchannel));
                if let Step::Data { calls, .. } =
                    next_step(rows, true, in_copy, self.settings.max_call_bytes)?
                {
                    per_vchannel.push(calls);
                }
            }
            self.with_retries(|t, _| t.apply_data(&per_vchannel, true))?;
        }
        self.journal
            .commit_batch(&self.run, &batch, self.settings.retain_applied)?;
        Ok(())
    }

    /// The rows `batch` covers past the applied positions, one list per vchannel in journal
    /// order, as they were cut.
    pub(super) fn marked_rows(
        &self,
        batch: &InFlightBatch,
    ) -> Result<Vec<Vec<JournalRow>>, ApplyError> {
        let mut rows_per_vchannel = Vec::new();
        for (vchannel, end) in &batch.ends {
            let after = self.journal.applied(self.run.task(), vchannel)?;
            let pending = self.journal.rows(
                self.run.task(),
                vchannel,
                after,
                end.ts,
                usize::MAX,
                usize::MAX,
            )?;
            rows_per_vchannel.push(pending.into_iter().filter(|r| r.position <= *end).collect());
        }
        Ok(rows_per_vchannel)
    }

    /// Applies what is next: one DDL, or a run of data batches (the next rows of every vchannel
    /// together, batch after batch) for as long as more are staged; answers whether it did any
    /// work. A run ends with every batch it sent committed and no marker left.
    ///
    /// Invariants: an applicable DDL goes before data, so events are not starved by a steady
    /// flow of rows elsewhere; the first batch of a run is sent only once its marker is
    /// committed (the run keeps that up for the batches after it, see [`Run::drive`]).
    pub fn step(&mut self) -> Result<bool, ApplyError> {
        let pending = self.pending();
        let planned = Instant::now();
        let Due { data, ddl_heads } = pending.due()?;
        METRICS.applier_stage("plan", planned);
        // A DDL whose barrier is complete goes first: the vchannels it waits for have nothing
        // before it, and data of other vchannels does not depend on it. So events are not
        // starved by a steady flow of rows elsewhere.
        if !ddl_heads.is_empty() && self.apply_ddl_heads(&pending, ddl_heads)? {
            return Ok(true);
        }
        let Some(first) = data else {
            return Ok(false);
        };
        let marked = Instant::now();
        self.journal.begin_batch(&self.run, &first.marker)?;
        METRICS.applier_stage("mark", marked);
        self.send_run(first)?;
        Ok(true)
    }

    /// Sends `first`, whose marker is committed, and the batches that follow it (see
    /// [`Run::send`]).
    fn send_run(&mut self, first: DataBatch) -> Result<(), ApplyError> {
        let retries = Retries {
            task: self.run.task(),
            settings: &self.settings,
            stop: &self.stop,
            health: &self.health,
        };
        let run = Run {
            writer: &self.run,
            journal: self.journal,
            settings: &self.settings,
            stop: &self.stop,
            not_ready: &self.not_ready,
        };
        run.send(first, &mut self.target, retries)
    }

    /// The rows pending after the applied positions.
    fn pending(&self) -> Pending<'a> {
        Pending::new(self.run.task(), self.journal, &self.settings, &[])
    }

    /// Applies the oldest DDL that is applicable (see [`Pending::applicable`]) and that the
    /// target is ready for, if any; answers whether it applied one.
    ///
    /// Invariants: the oldest applicable event goes first; it goes alone, its marker (its
    /// position on each vchannel of its barrier) committed before the target gets it and
    /// cleared by the transaction that commits those positions.
    fn apply_ddl_heads(
        &mut self,
        pending: &Pending,
        mut heads: Vec<JournalRow>,
    ) -> Result<bool, ApplyError> {
        let ticks = pending.ticks()?;
        // Oldest first: an index or load event must reach its collection before a later drop
        // of that collection (and a new one of the same name) does.
        heads.sort_by_key(|row| row.position);
        for row in heads {
            let Change::Ddl(ddl) = &row.change else {
                continue;
            };
            let Some(ends) = pending.applicable(&ticks, &row)? else {
                continue;
            };
            if !self.target_ready(&row, ddl)? {
                continue;
            }
            let batch = InFlightBatch { ends };
            self.journal.begin_batch(&self.run, &batch)?;
            self.with_retries(|t, _| t.apply_ddl(ddl))?;
            if matches!(ddl.event, DdlEvent::Replicated { .. }) {
                crate::failpoint::hit("replicated-after-ack");
            }
            self.journal
                .commit_batch(&self.run, &batch, self.settings.retain_applied)?;
            METRICS.applied(self.run.task(), row.change.operation(), 0, 0);
            self.ddl_applied += 1;
            info!(task = self.run.task(), database = %ddl.collection.db_name, collection = %ddl.collection.name,
                event = ddl_name(ddl), "DDL applied");
            return Ok(true);
        }
        Ok(false)
    }

    /// Asks the target whether it can take `ddl` now, at most every [`NOT_READY_RECHECK`] per
    /// event; a wait is shown in the task's health.
    ///
    /// Invariant: an event the target is not ready for gets no marker and stays pending, and
    /// the rest of the journal moves on (what it waits for may be behind it).
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
                    info!(task = self.run.task(), channel = %row.vchannel, event = ddl_name(ddl), %why,
                        "event waits for the target");
                }
                self.health.problem("target", format!("waiting: {why}"));
                self.not_ready
                    .insert(key, Instant::now() + NOT_READY_RECHECK);
                Ok(false)
            }
        }
    }

    /// Whether an event waits for the target to be ready for it (see [`Target::not_ready`]).
    pub fn waits_for_target(&self) -> bool {
        !self.not_ready.is_empty()
    }

    /// Runs `call` with the [`Retries`] of this applier.
    pub(super) fn with_retries(
        &mut self,
        call: impl FnMut(&mut T, bool) -> Result<(), TargetError>,
    ) -> Result<(), TargetError> {
        let retries = Retries {
            task: self.run.task(),
            settings: &self.settings,
            stop: &self.stop,
            health: &self.health,
        };
        retries.run(&mut self.target, call)
    }
}

/// The event's name in logs.
pub(super) fn ddl_name(ddl: &Ddl) -> &'static str {
    use crate::model::DdlEvent::*;
    match ddl.event {
        CreateCollection { .. } => "create collection",
        DropCollection => "drop collection",
        CreatePartition { .. } => "create partition",
        DropPartition { .. } => "drop partition",
        Replicated { kind, .. } => kind.operation().as_str(),
    }
}
