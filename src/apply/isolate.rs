//! What the target refuses for good: the batch in flight taken apart, row by row, to find the
//! one row it refuses (the poison), so that the task stops on exactly that row and an operator
//! can move past exactly that one.

use tracing::warn;

use super::applier::Applier;
use super::calls::{Step, next_step};
use super::order::Holds;
use super::{ApplyError, Target, TargetError};
use crate::journal::{InFlightBatch, JournalRow};
use crate::metrics::METRICS;
use crate::model::{Change, Poison, PoisonAt};

/// What taking the batch in flight apart found.
#[derive(Debug, PartialEq)]
pub enum Isolated {
    /// The target refuses this row; the marker stays over it and the rows after it.
    Poison(Poison),
    /// Every row went through alone, or was passed over as the skip policy allows.
    Applied,
    /// No batch was in flight: the refusal was not of a row.
    NothingInFlight,
}

impl<T: Target> Applier<'_, T> {
    /// After the target refused the batch in flight for a reason retrying cannot change: its
    /// rows one at a time, each as a replay (the target may have some already), committing
    /// each the target takes, up to the first it refuses. The row an operator approved skipping
    /// is not sent; with `skip_poison`, a refused row is passed over. Either is logged and
    /// counted.
    ///
    /// Invariant: the marker stays, over the rows not yet committed, until the whole batch is;
    /// a crash meanwhile replays those as any in-doubt batch.
    pub fn isolate(&mut self) -> Result<Isolated, ApplyError> {
        let Some(batch) = self.journal.in_flight(self.run.task())? else {
            return Ok(Isolated::NothingInFlight);
        };
        let rows_per_vchannel = self.marked_rows(&batch)?;
        let first = rows_per_vchannel.iter().flatten().next();
        if let Some(
            row @ JournalRow {
                change: Change::Ddl(ddl),
                ..
            },
        ) = first
        {
            // A DDL goes alone: the marker covers its copy on each vchannel of its barrier.
            if let Some(poison) = self.try_row(row, |t| t.apply_ddl(ddl))? {
                return Ok(Isolated::Poison(poison));
            }
        } else {
            let holds = Holds::read(self.journal, self.run.task())?;
            for row in rows_per_vchannel.iter().flatten() {
                let in_copy = holds.in_copy_through(&row.vchannel);
                let calls = match next_step(std::slice::from_ref(row), true, in_copy, usize::MAX)? {
                    Step::Data { calls, .. } => calls,
                    Step::Idle | Step::Ddl(_) => Vec::new(),
                };
                if let Some(poison) =
                    self.try_row(row, |t| t.apply_data(std::slice::from_ref(&calls), true))?
                {
                    return Ok(Isolated::Poison(poison));
                }
                let done = InFlightBatch {
                    ends: vec![(row.vchannel.clone(), row.position)],
                };
                self.journal.commit_batch_and_begin(
                    &self.run,
                    &done,
                    Some(&batch),
                    self.settings.retain_applied,
                )?;
            }
        }
        self.journal
            .commit_batch(&self.run, &batch, self.settings.retain_applied)?;
        Ok(Isolated::Applied)
    }

    /// Sends one row with `call` (retried while the error is transient), or passes over it if
    /// the skip policy allows; the poison when the target refuses it for good. A target that
    /// refuses every call ([`TargetError::Blocked`]) refuses no row: that is returned as the
    /// error it is, and the batch waits, never skipped.
    fn try_row(
        &mut self,
        row: &JournalRow,
        mut call: impl FnMut(&mut T) -> Result<(), TargetError>,
    ) -> Result<Option<Poison>, ApplyError> {
        let at = PoisonAt::Row {
            vchannel: row.vchannel.clone(),
            position: row.position,
        };
        if self.skip.approved.as_ref() == Some(&at) {
            METRICS.poison_skipped.inc();
            warn!(task = self.run.task(), %at, "row skipped, as the operator approved");
            return Ok(None);
        }
        let error = match self.with_retries(|t, _| call(t)) {
            Ok(()) => return Ok(None),
            Err(TargetError::Permanent(error)) => error,
            Err(waits) => return Err(waits.into()),
        };
        let poison = Poison {
            at,
            ts: Some(row.position.ts),
            error,
        };
        if !self.skip.every {
            return Ok(Some(poison));
        }
        METRICS.poison_skipped.inc();
        warn!(task = self.run.task(), %poison, "row skipped: the target refuses it (skip_poison)");
        Ok(None)
    }
}
