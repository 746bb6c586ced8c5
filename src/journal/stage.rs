//! The reader's side of the journal: staging changes with the channel's source offset in one
//! transaction, and what the readers' pacing reads (the journal's size, the recent-rows room).

use std::collections::HashMap;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::checkpoint::Mark;
use super::offsets::{ChannelOffsets, StagedOffset};
use super::recent::{CachedRow, RecentRoom, RecentRows};
use super::run::TaskRun;
use super::{
    JOURNAL_BYTES, Journal, JournalError, ROWS, STATS, add_journal_bytes, add_pending_bytes,
    from_json, json, pending_key, record,
};
use crate::model::{MetaOffset, MqPosition, RowPosition, SourceOffset, StagedChange};

/// Rows a stage inserted, for the cache of recent rows.
struct StagedRows {
    rows: Vec<(String, RowPosition, CachedRow)>,
    /// See [`RecentRows::staged`](super::recent::RecentRows::staged).
    openable: HashMap<String, RowPosition>,
}

impl Journal {
    /// Where the reader of `pchannel` resumes; as of the last stage, like every read of the
    /// offsets (see `recent.rs` on why they are read from memory).
    pub fn source_offset(
        &self,
        task: &str,
        pchannel: &str,
    ) -> Result<Option<SourceOffset>, JournalError> {
        Ok(self.recent().offsets.get(task, pchannel))
    }

    pub fn source_offsets(&self, task: &str) -> Result<Vec<(String, SourceOffset)>, JournalError> {
        Ok(self.recent().offsets.of_task(task))
    }

    /// Each physical channel's newest TimeTick staged: every change of the channel at or below
    /// it is in the journal.
    /// The metadata watcher's tick counts as its channel's.
    pub fn ticks(&self, task: &str) -> Result<HashMap<String, u64>, JournalError> {
        let recent = self.recent();
        let readers = recent.offsets.of_task(task).into_iter();
        let readers = readers.map(|(p, o)| (p, o.tick));
        let watchers = recent.meta_offsets.of_task(task).into_iter();
        let watchers = watchers.map(|(c, o)| (c, o.tick));
        Ok(readers.chain(watchers).collect())
    }

    /// Stages `changes` read from `pchannel` and records `next`/`tick` as the channel's new
    /// source offset, in one transaction. Sequence numbers continue the channel's counter.
    /// A crash before the commit loses nothing: the offset did not move either.
    pub fn stage(
        &self,
        run: &TaskRun,
        pchannel: &str,
        changes: &[StagedChange],
        next: MqPosition,
        tick: u64,
    ) -> Result<(), JournalError> {
        self.stage_read(run, pchannel, changes, next, None, tick)
    }

    /// [`stage`](Self::stage), with the fingerprint of the message read last before `next`
    /// ([`SourceOffset::last`]) recorded in the same transaction.
    pub fn stage_read(
        &self,
        run: &TaskRun,
        pchannel: &str,
        changes: &[StagedChange],
        next: MqPosition,
        last: Option<u64>,
        tick: u64,
    ) -> Result<(), JournalError> {
        let offset = |tick, next_seq| SourceOffset {
            next,
            tick,
            next_seq,
            last,
        };
        self.stage_with(run, pchannel, changes, tick, offset, |r| &mut r.offsets)
    }

    /// Where the metadata watcher of `channel` resumes.
    pub fn meta_offset(&self, task: &str, channel: &str) -> Option<MetaOffset> {
        self.recent().meta_offsets.get(task, channel)
    }

    /// Stages `changes` read from the source's etcd and records `next_revision`/`tick` as the
    /// watcher's new offset, in one transaction, as [`stage`](Self::stage) does for a reader.
    pub fn stage_meta(
        &self,
        run: &TaskRun,
        channel: &str,
        changes: &[StagedChange],
        next_revision: i64,
        tick: u64,
    ) -> Result<(), JournalError> {
        let offset = |tick, next_seq| MetaOffset {
            next_revision,
            tick,
            next_seq,
        };
        self.stage_with(run, channel, changes, tick, offset, |r| &mut r.meta_offsets)
    }

    /// The one transaction of a stage: `changes` inserted with sequence numbers carrying on
    /// `channel`'s, and its new offset (`offset(tick, next_seq)`, the tick never moving back)
    /// written beside them; then the cache of recent rows and offsets learns both.
    fn stage_with<O: StagedOffset>(
        &self,
        run: &TaskRun,
        channel: &str,
        changes: &[StagedChange],
        tick: u64,
        offset: impl FnOnce(u64, u64) -> O,
        cached: fn(&mut RecentRows) -> &mut ChannelOffsets<O>,
    ) -> Result<(), JournalError> {
        let task = run.task();
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        let (offset, staged) = {
            let mut offsets = txn.open_table(O::TABLE)?;
            let previous: Option<O> = offsets
                .get((task, channel))?
                .map(|v| from_json(|| format!("{} of {task}/{channel}", O::WHAT), v.value()))
                .transpose()?;
            let next_seq = previous.map_or(0, |p| p.next_seq());
            let staged = self.insert_rows(&txn, task, changes, next_seq)?;
            let offset = offset(
                previous.map_or(tick, |p| p.tick().max(tick)),
                next_seq + changes.len() as u64,
            );
            offsets.insert((task, channel), json(&offset)?.as_slice())?;
            (offset, staged)
        };
        self.commit(txn)?;
        let mut recent = self.recent();
        cached(&mut recent).set(task, channel, offset);
        let next_seq = offset.next_seq();
        let offset = offset.checkpoint();
        recent
            .marks
            .record(task, channel, Mark { next_seq, offset });
        recent.staged(task, staged.rows, staged.openable);
        drop(recent);
        self.staged.notify_all();
        Ok(())
    }

    /// Inserts `changes` with sequence numbers from `next_seq` in `txn`, and counts their bytes.
    fn insert_rows(
        &self,
        txn: &redb::WriteTransaction,
        task: &str,
        changes: &[StagedChange],
        next_seq: u64,
    ) -> Result<StagedRows, JournalError> {
        // Vchannels the cache has no window for, with their lowest position in this stage.
        let mut lowest: HashMap<String, RowPosition> = HashMap::new();
        {
            let recent = self.recent();
            for (staged, seq) in changes.iter().zip(next_seq..) {
                let v = &staged.vchannel;
                if recent.has_window(task, v) {
                    continue;
                }
                let position = RowPosition { ts: staged.ts, seq };
                lowest
                    .entry(v.clone())
                    .and_modify(|p| *p = (*p).min(position))
                    .or_insert(position);
            }
        }
        let mut rows = txn.open_table(ROWS)?;
        // A window may start at a vchannel's lowest staged row only if no older row lies
        // after it (timestamps of one channel need not arrive in order).
        let mut openable = HashMap::new();
        for (v, position) in lowest {
            let later = (task, v.as_str(), position.ts, position.seq)
                ..=(task, v.as_str(), u64::MAX, u64::MAX);
            if rows.range(later)?.next().is_none() {
                openable.insert(v, position);
            }
        }
        let mut added = 0u64;
        let mut cached = Vec::with_capacity(changes.len());
        for (staged, seq) in changes.iter().zip(next_seq..) {
            let bytes = record::encode(&staged.change).map_err(|e| JournalError::Corrupt {
                what: format!("change for {}", staged.vchannel),
                reason: e.to_string(),
            })?;
            rows.insert(
                (task, staged.vchannel.as_str(), staged.ts, seq),
                bytes.as_slice(),
            )?;
            added += bytes.len() as u64;
            cached.push((
                staged.vchannel.clone(),
                RowPosition { ts: staged.ts, seq },
                CachedRow {
                    change: staged.change.clone(),
                    encoded_len: bytes.len(),
                },
            ));
        }
        drop(rows);
        add_journal_bytes(txn, added as i64)?;
        add_pending_bytes(txn, task, added as i64)?;
        Ok(StagedRows {
            rows: cached,
            openable,
        })
    }

    /// How many stages have committed since the journal was opened.
    pub fn stages(&self) -> u64 {
        self.recent().stages()
    }

    /// Waits until more than `seen` stages have committed, or `timeout` has passed. An idle
    /// applier waits here so that new rows go out as soon as they are staged.
    pub fn wait_for_stage(&self, seen: u64, timeout: Duration) {
        // A poisoned lock only ends the wait early; the caller plans again either way.
        let _ = self
            .staged
            .wait_timeout_while(self.recent(), timeout, |recent| recent.stages() == seen);
    }

    /// Batches applied since the journal was opened (see [`wait_for_applied`](Self::wait_for_applied)).
    pub fn batches_applied(&self) -> u64 {
        self.recent().batches_applied()
    }

    /// Waits until more than `seen` batches have been applied, or `timeout` has passed. A
    /// reader held back until the applier makes room waits here.
    pub fn wait_for_applied(&self, seen: u64, timeout: Duration) {
        // As in `wait_for_stage`, a poisoned lock only ends the wait early.
        let _ = self
            .applied
            .wait_timeout_while(self.recent(), timeout, |recent| {
                recent.batches_applied() == seen
            });
    }

    /// Bytes of the task's rows staged and not yet applied; its readers wait while this is
    /// above their cap.
    pub fn pending_bytes(&self, task: &str) -> Result<u64, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(txn
            .open_table(STATS)?
            .get(pending_key(task).as_str())?
            .map_or(0, |v| v.value()))
    }

    /// Bytes of every row stored, applied rows kept for `dump` included.
    pub fn journal_bytes(&self) -> Result<u64, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(txn
            .open_table(STATS)?
            .get(JOURNAL_BYTES)?
            .map_or(0, |v| v.value()))
    }

    /// Room left in the cache of recently staged rows; a reader that stages past it makes the
    /// applier read those rows back from disk.
    pub fn recent_room(&self) -> RecentRoom {
        self.recent().room()
    }

    /// Rows the journal holds, all tasks (applied ones too when they are retained).
    pub fn journal_rows(&self) -> Result<u64, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(txn.open_table(ROWS)?.len()?)
    }
}
