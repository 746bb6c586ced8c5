//! Which journal rows are due, across a task's vchannels: each vchannel's rows up to its
//! channel's tick, and the DDL rows heading vchannels once their barrier allows them. (How the
//! due rows of one vchannel become target calls is [`super::calls`].)

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::debug;

use super::calls::{Call, Step, merged_across_vchannels, next_step};
use super::{ApplierSettings, ApplyError};
use crate::journal::{InFlightBatch, Journal, JournalRow};
use crate::model::{
    Change, CopyState, Ddl, DdlEvent, RowPosition, vchannel_collection_id, vchannel_pchannel,
};

/// How long an event the target is not ready for waits before it is asked again.
pub const NOT_READY_RECHECK: Duration = Duration::from_millis(500);

/// Events the target was not ready for, and when to ask again.
pub(super) type NotReady = HashMap<(String, RowPosition), Instant>;

/// Whether the target said it was not ready for `row`'s event less than
/// [`NOT_READY_RECHECK`] ago: it is not asked again yet.
pub(super) fn refused_recently(not_ready: &NotReady, row: &JournalRow) -> bool {
    not_ready
        .get(&(row.vchannel.clone(), row.position))
        .is_some_and(|&again| Instant::now() < again)
}

/// A data batch ready to send: its rows' end per vchannel (the in-flight marker) and its calls.
pub(super) struct DataBatch {
    pub(super) marker: InFlightBatch,
    /// Lanes of calls, sent side by side, each lane's calls in order: a lane per vchannel, or
    /// one lane of calls merged across them (`calls::merged_across_vchannels`).
    pub(super) lanes: Vec<Vec<Call>>,
    /// Some rows may be on the target already (a snapshot copy carried them): sent as a
    /// replay, inserts as upserts.
    pub(super) replay: bool,
}

/// Each physical channel's latest TimeTick, and the collections a snapshot copy holds back.
pub(super) struct Ticks {
    latest: HashMap<String, u64>,
    holds: Holds,
}

/// Collections of the task's snapshot copies (by source id).
#[derive(Default)]
pub(super) struct Holds {
    /// Being copied: their changes wait.
    copying: HashSet<i64>,
    /// Copied: their changes up to this source timestamp may be in the copy.
    replay_through: HashMap<i64, u64>,
    /// Their changes up to this source timestamp are in the copy: passed over.
    in_copy_through: HashMap<i64, u64>,
    /// Every change up to this source timestamp may be on the target: the task was taken over
    /// from another appliance, which may have applied them (see `journal::checkpoint`).
    taken_over_through: u64,
}

impl Holds {
    pub(super) fn read(journal: &Journal, task: &str) -> Result<Self, ApplyError> {
        let mut holds = Holds {
            taken_over_through: journal.replay_through(task)?,
            ..Holds::default()
        };
        for copy in journal.copies(task)? {
            holds.in_copy_through.insert(copy.source.id, copy.start_ts);
            match copy.state {
                CopyState::Done { replay_through } => {
                    holds.replay_through.insert(copy.source.id, replay_through);
                }
                CopyState::Copying { .. } => {
                    holds.copying.insert(copy.source.id);
                }
            }
        }
        Ok(holds)
    }

    /// The source timestamp through which `vchannel`'s changes are in a snapshot copy (0 for
    /// none): see [`crate::model::CopyProgress::start_ts`].
    pub(super) fn in_copy_through(&self, vchannel: &str) -> u64 {
        vchannel_collection_id(vchannel)
            .and_then(|id| self.in_copy_through.get(&id))
            .copied()
            .unwrap_or(0)
    }
}

impl Ticks {
    /// The timestamp through which `vchannel`'s rows are due: its channel's latest tick, or
    /// 0 while its collection is being copied (invariant, see `snapshot`: only the seeds that
    /// create it go before the copy, so no change reaches the target and is then overwritten
    /// by an older copied row). None for a channel without a tick.
    pub(super) fn due_through(&self, vchannel: &str) -> Option<u64> {
        let tick = *self.latest.get(vchannel_pchannel(vchannel)?)?;
        let copying =
            vchannel_collection_id(vchannel).is_some_and(|id| self.holds.copying.contains(&id));
        Some(if copying { 0 } else { tick })
    }

    /// Whether `vchannel`'s row at `ts` may already be on the target through a snapshot copy.
    fn replays(&self, vchannel: &str, ts: u64) -> bool {
        ts <= self.holds.taken_over_through
            || vchannel_collection_id(vchannel)
                .and_then(|id| self.holds.replay_through.get(&id))
                .is_some_and(|&through| ts <= through)
    }
}

/// What is due next.
pub(super) struct Due {
    /// The next rows of every vchannel with data at its head.
    pub(super) data: Option<DataBatch>,
    /// DDL rows heading their vchannels.
    pub(super) ddl_heads: Vec<JournalRow>,
}

/// A task's pending rows: read from the journal after the applied positions (or after the
/// batches in flight), in the order the rules below allow them to be applied.
pub(super) struct Pending<'a> {
    task: String,
    journal: &'a Journal,
    max_rows: usize,
    max_bytes: usize,
    max_call_bytes: usize,
    /// The ends of a batch being sent: its vchannels are read after them.
    in_flight: &'a [(String, RowPosition)],
}

impl<'a> Pending<'a> {
    pub(super) fn new(
        task: &str,
        journal: &'a Journal,
        settings: &ApplierSettings,
        in_flight: &'a [(String, RowPosition)],
    ) -> Self {
        Self {
            task: task.to_owned(),
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
            None => Ok(self.journal.applied(&self.task, vchannel)?),
        }
    }

    /// What is due after the applied positions (and the batches in flight): the next data
    /// rows of every vchannel as one batch, and the DDL rows heading vchannels.
    ///
    /// Invariant: a fetch limit never splits a timestamp. When the limits cut the only
    /// timestamp read, all of it is read, whatever its size; otherwise [`next_step`] leaves
    /// the last timestamp for the next batch.
    pub(super) fn due(&self) -> Result<Due, ApplyError> {
        let ticks = self.ticks()?;
        let mut ends = Vec::new();
        let mut per_vchannel = Vec::new();
        let mut ddl_heads = Vec::new();
        let mut replay = false;
        for vchannel in self.journal.vchannels(&self.task)? {
            let after = self.after(&vchannel)?;
            let mut rows = self.up_to_tick(&ticks, &vchannel, after, self.max_rows)?;
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
                        .rows(&self.task, &vchannel, after, ts, usize::MAX, usize::MAX)?;
            }
            let in_copy = ticks.holds.in_copy_through(&vchannel);
            match next_step(&rows, complete, in_copy, self.max_call_bytes)? {
                Step::Idle => {}
                Step::Data { rows, calls } => {
                    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
                        replay |= ticks.replays(&vchannel, first.position.ts);
                        ends.push((vchannel.clone(), last.position));
                        per_vchannel.push(calls);
                    }
                }
                Step::Ddl(row) => ddl_heads.push(row.clone()),
            }
        }
        Ok(Due {
            data: (!per_vchannel.is_empty()).then_some(DataBatch {
                marker: InFlightBatch { ends },
                lanes: merged_across_vchannels(per_vchannel, self.max_call_bytes),
                replay,
            }),
            ddl_heads,
        })
    }

    /// Each physical channel's latest TimeTick.
    pub(super) fn ticks(&self) -> Result<Ticks, ApplyError> {
        Ok(Ticks {
            latest: self.journal.ticks(&self.task)?,
            holds: Holds::read(self.journal, &self.task)?,
        })
    }

    /// The rows of `vchannel` after `after`, up to its channel's latest tick; at most
    /// `max_rows`, and the batch's bytes.
    ///
    /// Invariant: a row is due only once its channel's tick has reached its timestamp: until
    /// then rows of the same timestamp may still be staged (an upsert's Delete and Insert). A
    /// channel without a tick has nothing due.
    fn up_to_tick(
        &self,
        ticks: &Ticks,
        vchannel: &str,
        after: Option<RowPosition>,
        max_rows: usize,
    ) -> Result<Vec<JournalRow>, ApplyError> {
        // Rows above the channel's tick may still be joined by rows of the same timestamp.
        let Some(tick) = ticks.due_through(vchannel) else {
            return Ok(Vec::new());
        };
        Ok(self
            .journal
            .rows(&self.task, vchannel, after, tick, max_rows, self.max_bytes)?)
    }

    /// True when each of `vchannels` has been applied through `ts`: no pending row at or
    /// before it, and its channel is known to be past it. Past means its tick reached `ts`, or
    /// the collection's drop, after `ts`, is staged there: a channel's ticks stop once its last
    /// collection is dropped, so the drop may never be followed by a tick.
    fn applied_through(
        &self,
        ticks: &Ticks,
        vchannels: &[String],
        ts: u64,
    ) -> Result<bool, ApplyError> {
        for vchannel in vchannels {
            let after = self.after(vchannel)?;
            if self
                .journal
                .first_position(&self.task, vchannel, after, ts)?
                .is_some()
            {
                return Ok(false);
            }
            let ticked = ticks.due_through(vchannel).is_some_and(|tick| tick >= ts);
            let dropped_after = || -> Result<bool, ApplyError> {
                let next = self
                    .journal
                    .rows(&self.task, vchannel, after, u64::MAX, 1, 0)?;
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
    /// be applied; None before.
    ///
    /// Invariant: a DDL is applicable only once its barrier is reached and, for an event of the
    /// replicate channel, once every vchannel it waits for is applied through its timestamp.
    /// Such an event never holds up the data of other vchannels: it waits as a head of its
    /// own channel, not as a barrier on theirs.
    pub(super) fn applicable(
        &self,
        ticks: &Ticks,
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
        ticks: &Ticks,
        row: &JournalRow,
    ) -> Result<Option<Vec<(String, RowPosition)>>, ApplyError> {
        let Change::Ddl(ddl) = &row.change else {
            return Ok(None);
        };
        let mut ends = Vec::new();
        for vchannel in &ddl.barrier {
            let after = self.after(vchannel)?;
            let head = self.up_to_tick(ticks, vchannel, after, 1)?;
            match head.first() {
                Some(h) if h.position.ts == row.position.ts && same_ddl(&h.change, &row.change) => {
                    ends.push((vchannel.clone(), h.position));
                }
                _ if self.applied_through(
                    ticks,
                    std::slice::from_ref(vchannel),
                    row.position.ts,
                )? =>
                {
                    debug!(task = %self.task, channel = %vchannel, ts = row.position.ts,
                        "vchannel has passed the event without it: its reader started after it");
                }
                _ => return Ok(None),
            }
        }
        Ok(Some(ends))
    }
}

/// Whether two vchannels' copies are the same DDL. Each reader names the collection as the
/// source's metadata did when it read the message: across a rename the copies' names differ,
/// and the collection's id tells that they are one.
fn same_ddl(a: &Change, b: &Change) -> bool {
    match (a, b) {
        (Change::Ddl(a), Change::Ddl(b)) => {
            a.collection.id == b.collection.id
                && a.collection.db_name == b.collection.db_name
                && a.barrier == b.barrier
                && a.event == b.event
        }
        _ => a == b,
    }
}
