//! The reader's side of the journal: staging changes with the channel's source offset in one
//! transaction, and what the readers' pacing reads (the journal's size, the recent-rows room).

use std::collections::HashMap;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::recent::{CachedRow, RecentRoom};
use super::run::TaskRun;
use super::{
    JOURNAL_BYTES, Journal, JournalError, ROWS, SOURCE_OFFSETS, STATS, add_journal_bytes,
    add_pending_bytes, from_json, json, pending_key, record,
};
use crate::model::{MqPosition, RowPosition, SourceOffset, StagedChange};

impl Journal {
    /// Where the reader of `pchannel` resumes; as of the last stage, like every read of the
    /// offsets (see `recent.rs` on why they are read from memory).
    pub fn source_offset(
        &self,
        task: &str,
        pchannel: &str,
    ) -> Result<Option<SourceOffset>, JournalError> {
        Ok(self.recent().offset(task, pchannel))
    }

    pub fn source_offsets(&self, task: &str) -> Result<Vec<(String, SourceOffset)>, JournalError> {
        Ok(self.recent().offsets(task))
    }

    /// Each physical channel's newest TimeTick staged: every change of the channel at or below
    /// it is in the journal.
    pub fn ticks(&self, task: &str) -> Result<HashMap<String, u64>, JournalError> {
        let offsets = self.source_offsets(task)?;
        Ok(offsets.into_iter().map(|(p, o)| (p, o.tick)).collect())
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
        // Vchannels the cache has no window for, with their lowest position in this stage.
        let mut lowest: HashMap<String, RowPosition> = HashMap::new();
        let task = run.task();
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        let mut cached = Vec::with_capacity(changes.len());
        let (offset, openable) = {
            let mut offsets = txn.open_table(SOURCE_OFFSETS)?;
            let previous: Option<SourceOffset> = offsets
                .get((task, pchannel))?
                .map(|v| from_json(|| format!("source offset of {task}/{pchannel}"), v.value()))
                .transpose()?;
            let next_seq = previous.map_or(0, |p| p.next_seq);
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
            let offset = SourceOffset {
                next,
                tick: previous.map_or(tick, |p| p.tick.max(tick)),
                next_seq: next_seq + changes.len() as u64,
            };
            offsets.insert((task, pchannel), json(&offset)?.as_slice())?;
            drop(rows);
            add_journal_bytes(&txn, added as i64)?;
            add_pending_bytes(&txn, task, added as i64)?;
            (offset, openable)
        };
        self.commit(txn)?;
        self.recent()
            .staged(task, pchannel, offset, cached, openable);
        self.staged.notify_all();
        Ok(())
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
