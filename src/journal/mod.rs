//! The journal: one redb file holding every staged change until the target has it.
//!
//! Tables (all keyed by task first, so a task's state is one contiguous range):
//! - `rows`: `(task, vchannel, ts, seq)` → encoded [`Change`].
//! - `source_offsets`: `(task, pchannel)` → [`SourceOffset`]: where the reader resumes.
//! - `applied`: `(task, vchannel)` → [`RowPosition`] of the last row the target acknowledged.
//! - `in_flight`: `task` → [`InFlightBatch`] being sent to the target.
//! - `tasks`: `task` → the task's spec, opaque here.
//! - `stats`: counters kept in step with the rows: the bytes of every row stored, and per task
//!   the bytes staged and not yet applied (its readers' cap is on these, so a task that does not
//!   drain stalls no other).
//! - `runs`: `task` → the number of its current run; only that run may write (`run.rs`).
//! - `poison_messages`: `task` → the bytes of the source message its reader stopped on (a
//!   poison, see `model::Poison`), for `dump` to show.
//! - `imports_seen`: `task` → the source's bulk inserts it has seen complete (`imports.rs`).
//! - `format`: `"version"` → the journal's format version (`format.rs`). A journal of a newer
//!   format than this code's is refused at open, by `serve` and `dump` alike, before anything
//!   else in it is read or written; one without a version (format 1) is read as it is and
//!   stamped.
//!
//! Exactly once rests on two transactions:
//! - [`Journal::stage`] writes a run of changes **and** the channel's new source offset together,
//!   so after a crash the reader resumes right after the last staged message: none lost, none
//!   staged twice.
//! - [`Journal::commit_batch`] moves the applied positions **and** clears the in-flight marker
//!   together. A marker present at start-up is a batch the target may or may not have: the applier
//!   replays exactly those rows idempotently ([`Journal::in_flight`]).
//!
//! Crash behaviour: every write is one redb transaction, durable when it returns, so a crash
//! keeps all of a write or none of it. A write the disk refuses (full, failing) is treated as a
//! crash without the restart: the file is opened again before the next operation
//! (`storage.rs`). What lives only in memory (`recent.rs`: recently staged
//! rows and the offsets, for the applier's reads) is rebuilt from the file at open.
//!
//! Layout: the task records and opening the file here; the reader's side in `stage.rs`, the
//! applier's in `drain.rs`; lag read off the positions in `lag.rs`; the row encoding in
//! `record.rs`; the offline `dump` in `dump.rs`.

mod checkpoint;
mod copies;
mod disk;
mod drain;
pub mod dump;
mod format;
mod imports;
pub mod lag;
mod offsets;
mod recent;
pub mod record;
mod run;
mod stage;
mod storage;

pub use checkpoint::{ChannelCheckpoint, Checkpoint};
pub use disk::{DiskHold, StagingPermit};
pub use format::CURRENT as FORMAT_VERSION;
pub use imports::ImportsSeen;
pub use run::TaskRun;
pub use storage::StorageFault;
use storage::StorageState;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use offsets::ChannelOffsets;
pub use recent::RecentRoom;
use recent::RecentRows;

use crate::model::{Change, RowPosition, SourceOffset};

type RowKey<'a> = (&'a str, &'a str, u64, u64);

const ROWS: TableDefinition<RowKey, &[u8]> = TableDefinition::new("rows");
const SOURCE_OFFSETS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("source_offsets");
/// `(task, channel)` → the metadata watcher's [`MetaOffset`](crate::model::MetaOffset), as JSON.
const META_OFFSETS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("meta_offsets");
const APPLIED: TableDefinition<(&str, &str), (u64, u64)> = TableDefinition::new("applied");
const IN_FLIGHT: TableDefinition<&str, &[u8]> = TableDefinition::new("in_flight");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats");
const POISON_MESSAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("poison_messages");

const JOURNAL_BYTES: &str = "journal_bytes";
/// Prefix of each task's pending bytes (`pending_key`): what its readers' cap is measured on.
const PENDING_BYTES: &str = "pending_bytes";
/// Set once the pending bytes of the journal's tasks are counted (`count_pending_bytes`).
const PENDING_COUNTED: &str = "pending_bytes_counted";
/// redb's own page cache. Staged rows live in pages as large as the rows, which it keeps only
/// while there is room: [`RecentRows`] holds those instead, decoded.
const CACHE_BYTES: usize = 16 << 20;
/// What [`RecentRows`] may hold by default: the two batches in flight and the next one (each
/// 2 vchannels × 4 MiB by default), and room for the three 8 MiB stages that readers pacing
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
    #[error("cannot prepare data dir {path} (owner-only access): {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("journal storage error: {0}")]
    Storage(String),
    /// The disk under the journal failed; see `storage.rs`.
    #[error("the journal's disk failed: {0}")]
    Disk(String),
    #[error("run {run} of task {task} may no longer write: run {current} has begun since")]
    StaleRun {
        task: String,
        run: u64,
        current: u64,
    },
    #[error(
        "journal {path} was written by a newer milvus-cdc (journal format {found}); this one \
         reads formats up to {known}: run the newer release, or start this one on an empty \
         data dir (its tasks are not carried over)"
    )]
    NewerFormat {
        path: PathBuf,
        found: u64,
        known: u64,
    },
    #[error("journal row {what} is corrupt: {reason}")]
    Corrupt { what: String, reason: String },
}

impl From<redb::StorageError> for JournalError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            // The file failed (a full disk, an I/O error): `storage.rs` opens it again.
            redb::StorageError::Io(_) | redb::StorageError::PreviousIo => {
                JournalError::Disk(e.to_string())
            }
            other => JournalError::Storage(other.to_string()),
        }
    }
}

macro_rules! storage_from {
    ($($t:path),*) => {$(
        impl From<$t> for JournalError {
            fn from(e: $t) -> Self {
                use $t as Error;
                match e {
                    Error::Storage(storage) => storage.into(),
                    other => JournalError::Storage(other.to_string()),
                }
            }
        }
    )*};
}
storage_from!(redb::TransactionError, redb::TableError, redb::CommitError);

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
    /// None only while `storage.rs` opens the file again after a fault.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    recent_bytes: usize,
    recent: Mutex<RecentRows>,
    /// Notified after each stage; the count of stages is kept in `recent`.
    staged: Condvar,
    /// Notified after each applied batch; the count of batches is kept in `recent`.
    applied: Condvar,
    storage: StorageState,
    disk: disk::DiskState,
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

/// Creates `data_dir` (mode 0700) and `journal.redb` in it (0600), or narrows them to that
/// if they were readable by others: the journal holds target credentials and every row
/// replicated. Returns the journal's path.
fn private_data_dir(data_dir: &Path) -> Result<PathBuf, JournalError> {
    use std::fs::{DirBuilder, OpenOptions, Permissions};
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let path = data_dir.join("journal.redb");
    let failed = |at: &Path| {
        let at = at.to_owned();
        move |source| JournalError::DataDir { path: at, source }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(failed(data_dir))?;
    // An empty file is what redb initializes a new database in.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(failed(&path))?;
    for (at, mode) in [(data_dir, 0o700), (path.as_path(), 0o600)] {
        let current = std::fs::metadata(at)
            .map_err(failed(at))?
            .permissions()
            .mode();
        if current & 0o077 != 0 {
            std::fs::set_permissions(at, Permissions::from_mode(mode)).map_err(failed(at))?;
            tracing::info!(path = %at.display(), "made private to its owner (it was open to others)");
        }
    }
    Ok(path)
}

/// Opens the journal file and reads what the in-memory cache starts from: every channel's
/// offset and the vchannels with rows.
fn open_file(path: &Path, recent_bytes: usize) -> Result<(Database, RecentRows), JournalError> {
    // redb caches up to 1 GiB by default; the journal is read mostly once, in order.
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => JournalError::Locked {
                path: path.to_owned(),
            },
            redb::DatabaseError::Storage(storage) => storage.into(),
            other => JournalError::Open {
                path: path.to_owned(),
                source: Box::new(other),
            },
        })?;
    let txn = db.begin_write()?;
    // First: a newer format is refused before any table of it is opened.
    format::check_and_stamp(&txn, path)?;
    {
        txn.open_table(ROWS)?;
        txn.open_table(SOURCE_OFFSETS)?;
        txn.open_table(META_OFFSETS)?;
        txn.open_table(APPLIED)?;
        txn.open_table(IN_FLIGHT)?;
        txn.open_table(TASKS)?;
        txn.open_table(STATS)?;
        txn.open_table(run::RUNS)?;
        txn.open_table(POISON_MESSAGES)?;
        txn.open_table(copies::COPIES)?;
        txn.open_table(imports::IMPORTS)?;
        txn.open_table(checkpoint::TAKEOVERS)?;
        count_pending_bytes(&txn)?;
    }
    txn.commit()?;
    let txn = db.begin_read()?;
    let offsets = ChannelOffsets::read(&txn)?;
    let meta_offsets = ChannelOffsets::read(&txn)?;
    let vchannels = row_vchannels(&txn.open_table(ROWS)?)?;
    drop(txn);
    let recent = RecentRows::new(recent_bytes, offsets, meta_offsets, vchannels);
    Ok((db, recent))
}

impl Journal {
    /// Opens (creating if needed) the journal file `journal.redb` in `data_dir`, itself created
    /// if needed. Both are made private to the owner (see [`private_data_dir`]).
    pub fn open(data_dir: &Path) -> Result<Self, JournalError> {
        Self::open_with(data_dir, RECENT_ROWS_BYTES)
    }

    /// As [`Journal::open`], keeping up to `recent_bytes` of staged rows in memory for the
    /// applier.
    pub(crate) fn open_with(data_dir: &Path, recent_bytes: usize) -> Result<Self, JournalError> {
        let path = private_data_dir(data_dir)?;
        let (db, recent) = open_file(&path, recent_bytes)?;
        Ok(Self {
            db: RwLock::new(Some(db)),
            path,
            recent_bytes,
            recent: Mutex::new(recent),
            staged: Condvar::new(),
            applied: Condvar::new(),
            storage: StorageState::default(),
            disk: disk::DiskState::default(),
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

    /// The format version stored in the file ([`FORMAT_VERSION`] once open).
    pub fn format_version(&self) -> Result<Option<u64>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        format::stored(&txn)
    }

    // ---- tasks -------------------------------------------------------------------------------

    pub fn put_task(&self, task: &str, spec: &[u8]) -> Result<(), JournalError> {
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        txn.open_table(TASKS)?.insert(task, spec)?;
        self.commit(txn)?;
        Ok(())
    }

    /// Saves the task's record only while `run` is its current run, checked in the same
    /// transaction: what a run that has ended records about itself is refused
    /// ([`JournalError::StaleRun`]).
    pub fn put_task_of_run(&self, run: &TaskRun, spec: &[u8]) -> Result<(), JournalError> {
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        txn.open_table(TASKS)?.insert(run.task(), spec)?;
        self.commit(txn)?;
        Ok(())
    }

    pub fn task(&self, task: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(txn
            .open_table(TASKS)?
            .get(task)?
            .map(|v| v.value().to_vec()))
    }

    pub fn tasks(&self) -> Result<Vec<(String, Vec<u8>)>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(TASKS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Keeps the bytes of the message the task's reader stopped on (the last one only).
    pub fn put_poison_message(&self, run: &TaskRun, payload: &[u8]) -> Result<(), JournalError> {
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        txn.open_table(POISON_MESSAGES)?
            .insert(run.task(), payload)?;
        self.commit(txn)?;
        Ok(())
    }

    /// The bytes of the message the task's reader last stopped on, if any.
    pub fn poison_message(&self, task: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let value = txn.open_table(POISON_MESSAGES)?.get(task)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Removes the task and everything staged or recorded for it, in one transaction.
    /// Removes the task's record and every row, offset, position and copy record of it, and
    /// ends its run in the same transaction: a thread of it still going writes nothing more.
    /// Answers whether the record existed.
    pub fn delete_task(&self, task: &str) -> Result<bool, JournalError> {
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        let existed;
        {
            run::end_run(&txn, task)?;
            existed = txn.open_table(TASKS)?.remove(task)?.is_some();
            txn.open_table(IN_FLIGHT)?.remove(task)?;
            txn.open_table(POISON_MESSAGES)?.remove(task)?;
            txn.open_table(imports::IMPORTS)?.remove(task)?;
            txn.open_table(checkpoint::TAKEOVERS)?.remove(task)?;
            txn.open_table(copies::COPIES)?
                .retain_in((task, i64::MIN)..=(task, i64::MAX), |_, _| false)?;
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
            txn.open_table(META_OFFSETS)?
                .retain_in((task, "")..(above, ""), |_, _| false)?;
            txn.open_table(APPLIED)?
                .retain_in((task, "")..(above, ""), |_, _| false)?;
            add_journal_bytes(&txn, -(freed as i64))?;
            txn.open_table(STATS)?.remove(pending_key(task).as_str())?;
        }
        self.commit(txn)?;
        self.recent().remove_task(task);
        Ok(existed)
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
    add_stat(txn, JOURNAL_BYTES, delta)
}

/// The `stats` key of a task's pending bytes: rows staged and not yet applied.
fn pending_key(task: &str) -> String {
    format!("{PENDING_BYTES}/{task}")
}

fn add_pending_bytes(
    txn: &redb::WriteTransaction,
    task: &str,
    delta: i64,
) -> Result<(), JournalError> {
    add_stat(txn, &pending_key(task), delta)
}

fn add_stat(txn: &redb::WriteTransaction, key: &str, delta: i64) -> Result<(), JournalError> {
    if delta == 0 {
        return Ok(());
    }
    let mut stats = txn.open_table(STATS)?;
    let current = stats.get(key)?.map_or(0, |v| v.value());
    stats.insert(key, current.saturating_add_signed(delta))?;
    Ok(())
}

/// Counts every task's pending bytes from its rows and applied positions, once, in a journal
/// written before they were counted as rows were staged and applied.
fn count_pending_bytes(txn: &redb::WriteTransaction) -> Result<(), JournalError> {
    let mut stats = txn.open_table(STATS)?;
    if stats.get(PENDING_COUNTED)?.is_some() {
        return Ok(());
    }
    let applied = txn.open_table(APPLIED)?;
    let mut pending: HashMap<String, u64> = HashMap::new();
    for entry in txn.open_table(ROWS)?.iter()? {
        let (k, v) = entry?;
        let (task, vchannel, ts, seq) = k.value();
        let done = applied.get((task, vchannel))?.map(|a| a.value());
        if done.is_none_or(|done| (ts, seq) > done) {
            *pending.entry(task.to_owned()).or_default() += v.value().len() as u64;
        }
    }
    for (task, bytes) in pending {
        stats.insert(pending_key(&task).as_str(), bytes)?;
    }
    stats.insert(PENDING_COUNTED, 1)?;
    Ok(())
}

#[cfg(test)]
mod tests;
