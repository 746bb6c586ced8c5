//! The journal: one redb file holding every staged change until the target has it.
//!
//! Tables (all keyed by task first, so a task's state is one contiguous range):
//! - `rows`: `(task, vchannel, ts, seq)` → encoded [`Change`].
//! - `source_offsets`: `(task, pchannel)` → [`SourceOffset`]: where the reader resumes.
//! - `applied`: `(task, vchannel)` → [`RowPosition`] of the last row the target acknowledged.
//! - `in_flight`: `task` → [`InFlightBatch`] being sent to the target.
//! - `tasks`: `task` → the task's spec, opaque here.
//! - `stats`: counters kept in step with the rows (journal bytes).
//!
//! Exactly once rests on two transactions:
//! - [`Journal::stage`] writes a run of changes **and** the channel's new source offset together,
//!   so after a crash the reader resumes right after the last staged message: none lost, none
//!   staged twice.
//! - [`Journal::commit_batch`] moves the applied positions **and** clears the in-flight marker
//!   together. A marker present at start-up is a batch the target may or may not have: the applier
//!   replays exactly those rows idempotently ([`Journal::in_flight`]).

pub mod dump;
pub mod lag;
mod recent;
pub mod record;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

pub use recent::RecentRoom;
use recent::{CachedRow, Coverage, RecentRows};

use crate::model::{Change, MqPosition, RowPosition, SourceOffset, StagedChange};

type RowKey<'a> = (&'a str, &'a str, u64, u64);

const ROWS: TableDefinition<RowKey, &[u8]> = TableDefinition::new("rows");
const SOURCE_OFFSETS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("source_offsets");
const APPLIED: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("applied");
const IN_FLIGHT: TableDefinition<&str, &[u8]> = TableDefinition::new("in_flight");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats");

const JOURNAL_BYTES: &str = "journal_bytes";
/// redb's own page cache. Staged rows live in pages as large as the rows, which it keeps only
/// while there is room: [`RecentRows`] holds those instead, decoded.
const CACHE_BYTES: usize = 16 << 20;
/// What [`RecentRows`] may hold by default: the two batches in flight and the next one (each
/// 2 lanes × 4 MiB by default), and room for the three 8 MiB stages that readers pacing
/// themselves (`source::reader`'s `Pacer`) may commit at once.
const RECENT_ROWS_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {path} is in use by another process (is `milvus-cdc serve` running on it?)")]
    Locked { path: PathBuf },
    #[error("cannot open journal {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error("journal storage error: {0}")]
    Storage(String),
    #[error("journal row {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for JournalError {
            fn from(e: $t) -> Self {
                JournalError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A row read back for the applier.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalRow {
    pub vchannel: String,
    pub position: RowPosition,
    pub change: Change,
    pub encoded_len: usize,
}

/// The rows a batch covers: per vchannel, everything after its applied position up to `end`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightBatch {
    pub ends: Vec<(String, RowPosition)>,
}

pub struct Journal {
    db: Database,
    path: PathBuf,
    recent: Mutex<RecentRows>,
    /// Notified after each stage; the count of stages is kept in `recent`.
    staged: Condvar,
}

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

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, JournalError> {
    serde_json::to_vec(value).map_err(|e| JournalError::Storage(e.to_string()))
}

fn from_json<T: for<'de> Deserialize<'de>>(
    what: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, JournalError> {
    serde_json::from_slice(bytes).map_err(|e| JournalError::Corrupt {
        what: what(),
        reason: e.to_string(),
    })
}

impl Journal {
    /// Opens (creating if needed) the journal file `journal.redb` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, JournalError> {
        Self::open_with(data_dir, RECENT_ROWS_BYTES)
    }

    /// As [`Journal::open`], keeping up to `recent_bytes` of staged rows in memory for the
    /// applier.
    pub(crate) fn open_with(data_dir: &Path, recent_bytes: usize) -> Result<Self, JournalError> {
        let path = data_dir.join("journal.redb");
        // redb caches up to 1 GiB by default; the journal is read mostly once, in order.
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    JournalError::Locked { path: path.clone() }
                }
                other => JournalError::Open {
                    path: path.clone(),
                    source: Box::new(other),
                },
            })?;
        let txn = db.begin_write()?;
        {
            txn.open_table(ROWS)?;
            txn.open_table(SOURCE_OFFSETS)?;
            txn.open_table(APPLIED)?;
            txn.open_table(IN_FLIGHT)?;
            txn.open_table(TASKS)?;
            txn.open_table(STATS)?;
        }
        txn.commit()?;
        let txn = db.begin_read()?;
        let mut offsets = HashMap::new();
        for entry in txn.open_table(SOURCE_OFFSETS)?.iter()? {
            let (k, v) = entry?;
            let (task, pchannel) = k.value();
            let offset = from_json(|| format!("source offset of {task}/{pchannel}"), v.value())?;
            offsets.insert((task.to_owned(), pchannel.to_owned()), offset);
        }
        let vchannels = row_vchannels(&txn.open_table(ROWS)?)?;
        drop(txn);
        Ok(Self {
            db,
            path,
            recent: Mutex::new(RecentRows::new(recent_bytes, offsets, vchannels)),
            staged: Condvar::new(),
        })
    }

    fn recent(&self) -> MutexGuard<'_, RecentRows> {
        self.recent.lock().unwrap_or_else(|poisoned| {
            // A thread panicked while updating it: the rows may be half-updated, the disk is not.
            let mut recent = poisoned.into_inner();
            recent.clear_rows();
            recent
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    // ---- tasks -------------------------------------------------------------------------------

    pub fn put_task(&self, task: &str, spec: &[u8]) -> Result<(), JournalError> {
        let txn = self.db.begin_write()?;
        txn.open_table(TASKS)?.insert(task, spec)?;
        txn.commit()?;
        Ok(())
    }

    pub fn task(&self, task: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(TASKS)?
            .get(task)?
            .map(|v| v.value().to_vec()))
    }

    pub fn tasks(&self) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(TASKS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Removes the task and everything staged or recorded for it, in one transaction.
    pub fn delete_task(&self, task: &str) -> Result<bool, JournalError> {
        let txn = self.db.begin_write()?;
        let existed;
        {
            existed = txn.open_table(TASKS)?.remove(task)?.is_some();
            txn.open_table(IN_FLIGHT)?.remove(task)?;
            // `task\0` is the smallest string above `task`: the range is exactly this task's keys.
            let above = format!("{task}\0");
            let above = above.as_str();
            let mut freed = 0u64;
            let mut rows = txn.open_table(ROWS)?;
            for entry in
                rows.extract_from_if((task, "", 0u64, 0u64)..(above, "", 0u64, 0u64), |_, _| true)?
            {
                let (_, v) = entry?;
                freed += v.value().len() as u64;
            }
            txn.open_table(SOURCE_OFFSETS)?
                .retain_in((task, "")..(above, ""), |_, _| false)?;
            txn.open_table(APPLIED)?
                .retain_in((task, "")..(above, ""), |_, _| false)?;
            add_journal_bytes(&txn, -(freed as i64))?;
        }
        txn.commit()?;
        self.recent().remove_task(task);
        Ok(existed)
    }

    // ---- reader side -------------------------------------------------------------------------

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

    /// Stages `changes` read from `pchannel` and records `next`/`tick` as the channel's new
    /// source offset, in one transaction. Sequence numbers continue the channel's counter.
    /// A crash before the commit loses nothing: the offset did not move either.
    pub fn stage(
        &self,
        task: &str,
        pchannel: &str,
        changes: &[StagedChange],
        next: MqPosition,
        tick: u64,
    ) -> Result<(), JournalError> {
        // Vchannels the cache has no window for, with their lowest position in this stage.
        let mut lowest: HashMap<String, RowPosition> = HashMap::new();
        let txn = self.db.begin_write()?;
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
            (offset, openable)
        };
        txn.commit()?;
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

    /// Bytes of staged rows not yet removed; the reader waits while this is above its cap.
    pub fn journal_bytes(&self) -> Result<u64, JournalError> {
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(ROWS)?.len()?)
    }

    // ---- applier side ------------------------------------------------------------------------

    /// The vchannels of `task` with rows to apply, and perhaps some whose rows have all been
    /// applied: callers find nothing pending there.
    pub fn vchannels(&self, task: &str) -> Result<Vec<String>, JournalError> {
        Ok(self.recent().vchannels(task))
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
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
        let txn = self.db.begin_read()?;
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
    pub fn begin_batch(&self, task: &str, batch: &InFlightBatch) -> Result<(), JournalError> {
        let txn = self.db.begin_write()?;
        txn.open_table(IN_FLIGHT)?
            .insert(task, json(batch)?.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The batch that was being sent when the process stopped, if any.
    pub fn in_flight(&self, task: &str) -> Result<Option<InFlightBatch>, JournalError> {
        let txn = self.db.begin_read()?;
        let value = txn.open_table(IN_FLIGHT)?.get(task)?;
        value
            .map(|v| from_json(|| format!("in-flight marker of {task}"), v.value()))
            .transpose()
    }

    /// The target acknowledged `batch`: move each vchannel's applied position to its end, drop the
    /// applied rows unless `retain`, and clear the marker, in one transaction.
    pub fn commit_batch(
        &self,
        task: &str,
        batch: &InFlightBatch,
        retain: bool,
    ) -> Result<(), JournalError> {
        self.commit_batch_and_begin(task, batch, None, retain)
    }

    /// As [`Journal::commit_batch`], and in the same transaction the marker names `next`
    /// instead (as [`Journal::begin_batch`] would): one commit per batch when batches follow
    /// each other.
    pub fn commit_batch_and_begin(
        &self,
        task: &str,
        batch: &InFlightBatch,
        next: Option<&InFlightBatch>,
        retain: bool,
    ) -> Result<(), JournalError> {
        let txn = self.db.begin_write()?;
        {
            let mut applied = txn.open_table(APPLIED)?;
            let mut rows = txn.open_table(ROWS)?;
            let mut freed = 0u64;
            for (vchannel, end) in &batch.ends {
                let vchannel = vchannel.as_str();
                applied.insert((task, vchannel), (end.ts, end.seq))?;
                if !retain {
                    let range = (task, vchannel, 0u64, 0u64)..=(task, vchannel, end.ts, end.seq);
                    for entry in rows.extract_from_if(range, |_, _| true)? {
                        let (_, v) = entry?;
                        freed += v.value().len() as u64;
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
        }
        txn.commit()?;
        let mut recent = self.recent();
        for (vchannel, end) in &batch.ends {
            recent.applied(task, vchannel, *end);
        }
        Ok(())
    }
}

/// Every `(task, vchannel)` with rows, one key lookup each.
fn row_vchannels(
    rows: &redb::ReadOnlyTable<RowKey<'static>, &'static [u8]>,
) -> Result<BTreeSet<(String, String)>, JournalError> {
    let mut out = BTreeSet::new();
    let (mut task, mut from) = (String::new(), String::new());
    while let Some((key, _)) = rows
        .range((task.as_str(), from.as_str(), 0u64, 0u64)..)?
        .next()
        .transpose()?
    {
        let (t, vchannel, _, _) = key.value();
        out.insert((t.to_owned(), vchannel.to_owned()));
        // The smallest key after every row of this vchannel.
        (task, from) = (t.to_owned(), format!("{vchannel}\0"));
    }
    Ok(out)
}

fn add_journal_bytes(txn: &redb::WriteTransaction, delta: i64) -> Result<(), JournalError> {
    if delta == 0 {
        return Ok(());
    }
    let mut stats = txn.open_table(STATS)?;
    let current = stats.get(JOURNAL_BYTES)?.map_or(0, |v| v.value());
    stats.insert(JOURNAL_BYTES, current.saturating_add_signed(delta))?;
    Ok(())
}

#[cfg(test)]
mod tests;
