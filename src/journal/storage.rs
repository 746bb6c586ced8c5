//! The disk under the journal failing: full (ENOSPC) or erroring (EIO).
//!
//! After a failed write redb refuses every further transaction (`StorageError::PreviousIo`)
//! until the file is opened again. So a write that fails on the disk records a
//! [`StorageFault`] (what and since when, for `/readyz` and the tasks' reasons), and the next
//! operation opens the file again first: once there is space, the journal goes on without a
//! restart. Opening again is what a restart after a crash does: the file is as the last
//! committed transaction left it, the in-memory cache is rebuilt from it, and readers and the
//! applier resume from their stored positions (a stage or a batch commit that failed never
//! happened), so nothing is lost or doubled. The fault is cleared by the next write that
//! commits.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, RwLockReadGuard};
use std::time::SystemTime;

use redb::{Database, WriteTransaction};
use tracing::{info, warn};

use super::{Journal, JournalError, open_file};

/// A write the journal's disk refused, and since when it does.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageFault {
    pub error: String,
    pub since: SystemTime,
}

#[derive(Default)]
pub(super) struct StorageState {
    fault: Mutex<Option<StorageFault>>,
    /// Set by a disk error: the file must be opened again before the next operation.
    reopen: AtomicBool,
}

/// The database, held for one operation: the file is not opened again meanwhile.
pub(super) struct Db<'a>(RwLockReadGuard<'a, Option<Database>>);

impl Deref for Db<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        // `Journal::db` makes a `Db` only over an open database.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("a Db is made only over an open database"))
    }
}

impl Journal {
    /// The database for one operation, opened again first after a disk fault.
    pub(super) fn db(&self) -> Result<Db<'_>, JournalError> {
        if self.storage.reopen.load(Ordering::Acquire) {
            self.reopen()?;
        }
        let db = self.db.read().unwrap_or_else(PoisonError::into_inner);
        if db.is_none() {
            return Err(JournalError::Disk(format!(
                "{} is not open: opening it again failed",
                self.path.display()
            )));
        }
        Ok(Db(db))
    }

    pub(super) fn begin_write(&self, db: &Db) -> Result<WriteTransaction, JournalError> {
        db.begin_write().map_err(|e| self.failed(e.into()))
    }

    /// Commits `txn`; a commit is what says the disk writes again.
    pub(super) fn commit(&self, txn: WriteTransaction) -> Result<(), JournalError> {
        txn.commit().map_err(|e| self.failed(e.into()))?;
        let mut fault = self
            .storage
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if fault.take().is_some() {
            info!(journal = %self.path.display(), "journal writes again");
        }
        Ok(())
    }

    /// Records a disk error (and has the file opened again before the next operation).
    fn failed(&self, err: JournalError) -> JournalError {
        if let JournalError::Disk(error) = &err {
            let mut fault = self
                .storage
                .fault
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if fault.is_none() {
                warn!(journal = %self.path.display(), %error, "journal write failed on its disk");
            }
            let since = fault.as_ref().map_or_else(SystemTime::now, |f| f.since);
            *fault = Some(StorageFault {
                error: error.clone(),
                since,
            });
            self.storage.reopen.store(true, Ordering::Release);
        }
        err
    }

    /// The disk fault writes are failing with, if any.
    pub fn storage_fault(&self) -> Option<StorageFault> {
        self.storage
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the journal cannot do its work now, and since when: staging held for room on its
    /// disk, or writes failing. The one answer of `/readyz` and `milvus_cdc_ready`.
    pub fn unready(&self) -> Option<String> {
        if let Some(hold) = self.disk_hold() {
            let since = humantime::format_rfc3339_seconds(hold.since);
            return Some(format!("journal {hold} (since {since})"));
        }
        self.storage_fault().map(|fault| {
            let since = humantime::format_rfc3339_seconds(fault.since);
            format!("journal writes fail (since {since}): {}", fault.error)
        })
    }

    fn reopen(&self) -> Result<(), JournalError> {
        // Waits for every operation on the old database to end.
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        if !self.storage.reopen.load(Ordering::Acquire) {
            return Ok(()); // another thread did it meanwhile
        }
        // Dropped first: the file is locked while it is open.
        *db = None;
        match open_file(&self.path, self.recent_bytes) {
            Ok((fresh, recent)) => {
                *self.recent() = recent;
                *db = Some(fresh);
                self.storage.reopen.store(false, Ordering::Release);
                info!(journal = %self.path.display(), "journal opened again after a disk fault");
                Ok(())
            }
            Err(err) => Err(match err {
                JournalError::Disk(_) => err,
                other => JournalError::Disk(other.to_string()),
            }),
        }
    }
}
