//! The pipelined run of data batches: a thread sends them to the target one after the other
//! while the applier's thread reads the next batch ahead, marks it in flight and commits the
//! batches the target acknowledged.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, TryRecvError};
use tracing::debug;

use super::calls::Call;
use super::order::{DataBatch, Due, NotReady, Pending, refused_recently};
use super::retry::Retries;
use super::{ApplierSettings, ApplyError, Target, TargetError};
use crate::journal::{InFlightBatch, Journal, JournalRow, TaskRun};
use crate::metrics::METRICS;
use crate::model::RowPosition;

/// How many data batches may be on their way to the target at once: one being sent, and the
/// next one ready behind it.
const PIPELINE_DEPTH: usize = 2;

/// How long a run waits for an acknowledgment before it looks for newly staged rows again.
const STAGED_RECHECK: Duration = Duration::from_millis(10);

/// A run of data batches: the journal side, on the applier's thread.
pub(super) struct Run<'r> {
    /// The task's run: the journal refuses its writes once a newer run has begun.
    pub(super) writer: &'r TaskRun,
    pub(super) journal: &'r Journal,
    pub(super) settings: &'r ApplierSettings,
    pub(super) stop: &'r AtomicBool,
    /// Events the target was not ready for, and when to ask again.
    pub(super) not_ready: &'r NotReady,
}

/// What reading ahead found.
enum ReadAhead {
    Batch(DataBatch),
    /// Nothing more is staged yet.
    Nothing,
    /// The run reads no further: a DDL heading a vchannel may be applicable once the batches
    /// in flight are acknowledged (decided with nothing in flight), or reading what is due
    /// failed (the error shows again when the next step reads it).
    End,
}

impl Run<'_> {
    /// Sends `first`, whose marker is committed, and the batches that follow it: a thread of
    /// its own sends them one after the other while this one reads the next batch ahead, marks
    /// it and commits the batches the target acknowledged. The target never waits for the
    /// journal, and one transaction both commits and marks.
    pub(super) fn send<T: Target>(
        &self,
        first: DataBatch,
        target: &mut T,
        retries: Retries<'_>,
    ) -> Result<(), ApplyError> {
        std::thread::scope(|scope| {
            let (queue, queued) = crossbeam_channel::bounded::<DataBatch>(PIPELINE_DEPTH);
            let (acknowledge, acknowledged) =
                crossbeam_channel::bounded::<Result<DataBatch, TargetError>>(PIPELINE_DEPTH);
            let sender = scope.spawn(move || {
                for batch in queued {
                    let sent = Instant::now();
                    let result = retries.run(target, |t, in_doubt| {
                        t.apply_data(&batch.lanes, in_doubt || batch.replay)
                    });
                    METRICS.batch_seconds.observe(sent.elapsed().as_secs_f64());
                    METRICS.applier_stage("send", sent);
                    let failed = result.is_err();
                    if acknowledge.send(result.map(|()| batch)).is_err() || failed {
                        break;
                    }
                }
            });
            let result = self.drive(first, &queue, &acknowledged);
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
        // The sender stops only after a failed send, which it reports first: that error, not
        // the stop, is what the caller must see.
        let sender_stopped = || {
            acknowledgments
                .try_iter()
                .find_map(Result::err)
                .unwrap_or_else(|| TargetError::Transient("the batch sender stopped".into()))
        };
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
                record_applied(self.writer.task(), &batch);
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
        let pending = Pending::new(self.writer.task(), self.journal, self.settings, &in_flight);
        let found = match pending.due() {
            Ok(Due { data, ddl_heads }) => match self.awaits_ddl(&pending, &ddl_heads) {
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
    fn awaits_ddl(&self, pending: &Pending, heads: &[JournalRow]) -> Result<bool, ApplyError> {
        if heads.is_empty() {
            return Ok(false);
        }
        let ticks = pending.ticks()?;
        for row in heads {
            if !refused_recently(self.not_ready, row) && pending.applicable(&ticks, row)?.is_some()
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
                    self.writer,
                    &done,
                    marker.as_ref(),
                    self.settings.retain_applied,
                )?;
                METRICS.applier_stage("commit", started);
            }
            (None, Some(marker)) if next.is_some() => {
                self.journal.begin_batch(self.writer, &marker)?;
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
