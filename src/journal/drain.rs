//! The applier's side of the journal: reading pending rows in order, and the in-flight marker
//! and applied positions whose two transactions make applying exactly once.

use redb::{ReadableDatabase, ReadableTable};

use super::recent::Coverage;
use super::run::TaskRun;
use super::{
    APPLIED, IN_FLIGHT, InFlightBatch, Journal, JournalError, JournalRow, ROWS, add_journal_bytes,
    add_pending_bytes, from_json, json, record,
};
use crate::model::{RowPosition, vchannel_collection_id};

/// How many rows and bytes a read may still take: at most `max_rows` rows, and no more bytes
/// than `max_bytes` beyond the first row.
struct ReadLimits {
    max_rows: usize,
    max_bytes: usize,
    rows: usize,
    bytes: usize,
    full: bool,
}

impl ReadLimits {
    fn new(max_rows: usize, max_bytes: usize) -> Self {
        Self {
            max_rows,
            max_bytes,
            rows: 0,
            bytes: 0,
            full: false,
        }
    }

    /// Takes a row of `len` bytes, unless the limits are reached.
    fn admit(&mut self, len: usize) -> bool {
        if self.rows > 0 && (self.rows >= self.max_rows || self.bytes + len > self.max_bytes) {
            self.full = true;
            return false;
        }
        self.rows += 1;
        self.bytes += len;
        true
    }
}

impl Journal {
    /// The vchannels of `task` with rows to apply, and perhaps some whose rows have all been
    /// applied: callers find nothing pending there.
    pub fn vchannels(&self, task: &str) -> Result<Vec<String>, JournalError> {
        Ok(self.recent().vchannels(task))
    }

    /// Every vchannel of collection `collection_id` that `task` has staged rows of: pending
    /// ones, and applied ones (their applied positions stay when the rows are gone).
    pub fn vchannels_of_collection(
        &self,
        task: &str,
        collection_id: i64,
    ) -> Result<Vec<String>, JournalError> {
        let mut found: Vec<String> = self
            .applied_positions(task)?
            .into_iter()
            .map(|(vchannel, _)| vchannel)
            .chain(self.vchannels(task)?)
            .filter(|v| vchannel_collection_id(v) == Some(collection_id))
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }

    /// The position of the first row of `vchannel` after `after` with a timestamp at most
    /// `max_ts`.
    pub fn first_position(
        &self,
        task: &str,
        vchannel: &str,
        after: Option<RowPosition>,
        max_ts: u64,
    ) -> Result<Option<RowPosition>, JournalError> {
        let first = self.rows(task, vchannel, after, max_ts, 1, 0)?;
        Ok(first.first().map(|row| row.position))
    }

    /// Every vchannel's applied position for `task`.
    pub fn applied_positions(
        &self,
        task: &str,
    ) -> Result<Vec<(String, RowPosition)>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(APPLIED)?;
        let mut out = Vec::new();
        for entry in table.range((task, "")..)? {
            let (k, v) = entry?;
            let (t, vchannel) = k.value();
            if t != task {
                break;
            }
            let (ts, seq) = v.value();
            out.push((vchannel.to_owned(), RowPosition { ts, seq }));
        }
        Ok(out)
    }

    pub fn applied(&self, task: &str, vchannel: &str) -> Result<Option<RowPosition>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let value = txn.open_table(APPLIED)?.get((task, vchannel))?;
        Ok(value.map(|v| {
            let (ts, seq) = v.value();
            RowPosition { ts, seq }
        }))
    }

    /// Rows of one vchannel after `after`, with timestamps at most `max_ts`, in position order;
    /// at most `max_rows` rows, and no more bytes than `max_bytes` beyond the first row. Read
    /// from memory where [`RecentRows`] covers them, from disk elsewhere.
    pub fn rows(
        &self,
        task: &str,
        vchannel: &str,
        after: Option<RowPosition>,
        max_ts: u64,
        max_rows: usize,
        max_bytes: usize,
    ) -> Result<Vec<JournalRow>, JournalError> {
        let through = RowPosition {
            ts: max_ts,
            seq: u64::MAX,
        };
        let mut limits = ReadLimits::new(max_rows, max_bytes);
        let mut out = Vec::new();
        // Every row up to here is read; each turn moves it on, to the end of a cached part or
        // of a part read from disk.
        let mut read_to = after;
        while !limits.full && read_to < Some(through) {
            let coverage = self
                .recent()
                .rows(task, vchannel, read_to, through, &mut |len| {
                    limits.admit(len)
                });
            match coverage {
                Coverage::Rows { rows, through } => {
                    out.extend(rows.into_iter().map(|(position, row)| JournalRow {
                        vchannel: vchannel.to_owned(),
                        position,
                        change: row.change,
                        encoded_len: row.encoded_len,
                    }));
                    read_to = Some(through);
                }
                Coverage::Disk { until } => {
                    let until = until.map_or(through, |until| until.min(through));
                    self.read_rows(task, vchannel, read_to, until, &mut limits, &mut out)?;
                    read_to = Some(until);
                }
            }
        }
        Ok(out)
    }

    /// Rows of one vchannel after `after` through `through`, from disk.
    fn read_rows(
        &self,
        task: &str,
        vchannel: &str,
        after: Option<RowPosition>,
        through: RowPosition,
        limits: &mut ReadLimits,
        out: &mut Vec<JournalRow>,
    ) -> Result<(), JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(ROWS)?;
        let start = after.map_or((0, 0), |p| (p.ts, p.seq));
        let range = (task, vchannel, start.0, start.1)..=(task, vchannel, through.ts, through.seq);
        for entry in table.range(range)? {
            let (k, v) = entry?;
            let (_, _, ts, seq) = k.value();
            let position = RowPosition { ts, seq };
            if after == Some(position) {
                continue;
            }
            let value = v.value();
            if !limits.admit(value.len()) {
                break;
            }
            let change = record::decode(value).map_err(|e| JournalError::Corrupt {
                what: format!("{task}/{vchannel}@{ts}/{seq}"),
                reason: e.to_string(),
            })?;
            out.push(JournalRow {
                vchannel: vchannel.to_owned(),
                position,
                change,
                encoded_len: value.len(),
            });
        }
        Ok(())
    }

    /// Records that `batch` is about to be sent. Committed before the first target call.
    pub fn begin_batch(&self, run: &TaskRun, batch: &InFlightBatch) -> Result<(), JournalError> {
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        txn.open_table(IN_FLIGHT)?
            .insert(run.task(), json(batch)?.as_slice())?;
        self.commit(txn)?;
        Ok(())
    }

    /// The batch that was being sent when the process stopped, if any.
    pub fn in_flight(&self, task: &str) -> Result<Option<InFlightBatch>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let value = txn.open_table(IN_FLIGHT)?.get(task)?;
        value
            .map(|v| from_json(|| format!("in-flight marker of {task}"), v.value()))
            .transpose()
    }

    /// The target acknowledged `batch`: move each vchannel's applied position to its end, drop the
    /// applied rows unless `retain`, and clear the marker, in one transaction.
    pub fn commit_batch(
        &self,
        run: &TaskRun,
        batch: &InFlightBatch,
        retain: bool,
    ) -> Result<(), JournalError> {
        self.commit_batch_and_begin(run, batch, None, retain)
    }

    /// As [`Journal::commit_batch`], and in the same transaction the marker names `next`
    /// instead (as [`Journal::begin_batch`] would): one commit per batch when batches follow
    /// each other.
    pub fn commit_batch_and_begin(
        &self,
        run: &TaskRun,
        batch: &InFlightBatch,
        next: Option<&InFlightBatch>,
        retain: bool,
    ) -> Result<(), JournalError> {
        let task = run.task();
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        {
            let mut applied = txn.open_table(APPLIED)?;
            let mut rows = txn.open_table(ROWS)?;
            let (mut freed, mut newly_applied) = (0u64, 0u64);
            for (vchannel, end) in &batch.ends {
                let vchannel = vchannel.as_str();
                let before = applied
                    .insert((task, vchannel), (end.ts, end.seq))?
                    .map(|v| v.value());
                let newly = |ts: u64, seq: u64| before.is_none_or(|before| (ts, seq) > before);
                let range = (task, vchannel, 0u64, 0u64)..=(task, vchannel, end.ts, end.seq);
                if retain {
                    for entry in rows.range(range)? {
                        let (k, v) = entry?;
                        let (_, _, ts, seq) = k.value();
                        if newly(ts, seq) {
                            newly_applied += v.value().len() as u64;
                        }
                    }
                } else {
                    for entry in rows.extract_from_if(range, |_, _| true)? {
                        let (k, v) = entry?;
                        let (_, _, ts, seq) = k.value();
                        let len = v.value().len() as u64;
                        freed += len;
                        if newly(ts, seq) {
                            newly_applied += len;
                        }
                    }
                }
            }
            match next {
                Some(next) => txn
                    .open_table(IN_FLIGHT)?
                    .insert(task, json(next)?.as_slice())
                    .map(drop)?,
                None => txn.open_table(IN_FLIGHT)?.remove(task).map(drop)?,
            }
            drop(rows);
            add_journal_bytes(&txn, -(freed as i64))?;
            add_pending_bytes(&txn, task, -(newly_applied as i64))?;
        }
        self.commit(txn)?;
        let mut recent = self.recent();
        for (vchannel, end) in &batch.ends {
            recent.applied(task, vchannel, *end);
        }
        recent.batch_applied();
        drop(recent);
        self.applied.notify_all();
        Ok(())
    }
}
