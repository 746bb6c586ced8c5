//! The room the journal keeps on its own disk, so that it can never fill it.
//!
//! The journal is copy-on-write: even a commit that deletes rows first writes new pages, and
//! when the file has no free page left redb grows it, by as much as the file's own size while
//! it is under one 4 GiB region. A journal that staged until its disk was full would leave its
//! applier unable to commit the batch that frees space: wedged for good. So staging is held
//! while the disk's free space is under the room the journal needs ([`Room`]): the configured
//! reserve, or one more growth of the file, whichever is more, plus the part of the file not
//! yet written (a sparse file takes its blocks when written). The applier goes on meanwhile;
//! while there is no room the file is compacted, which gives the pages the applier freed back
//! to the disk (at most every 10 s, and only once the journal changed since the last time), and
//! staging resumes when there is room again. `/readyz` and each task's reason say why while
//! staging is held.
//!
//! Invariant: the room is looked at and the stage committed under one gate
//! ([`Journal::staging_permit`]), so two readers never both stage on the same free space.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::{Journal, JournalError};

/// `[journal] disk_reserve_bytes` when it is not set.
const DEFAULT_DISK_RESERVE: u64 = 64 << 20;

/// Why staging is held.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskHold {
    /// The folder of the journal's file.
    pub dir: String,
    pub free: u64,
    pub needed: u64,
    pub since: SystemTime,
}

impl fmt::Display for DiskHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "staging held: the disk under {} has {} free, under the {} the journal keeps to \
             apply and shrink; it resumes once the applier has drained the journal, or once \
             there is free space on that disk",
            self.dir,
            mib(self.free),
            mib(self.needed),
        )
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// What the journal's file holds on its disk, and may yet take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Room {
    pub free: u64,
    pub file_len: u64,
    pub file_allocated: u64,
}

impl Room {
    /// The free space staging keeps: `reserve`, or room for the file to grow once, whichever
    /// is more, and the blocks the file may still take without growing.
    pub(super) fn needed(&self, reserve: u64) -> u64 {
        let growth = self.file_len.min(8 << 30);
        reserve.max(growth) + self.file_len.saturating_sub(self.file_allocated)
    }

    fn read(path: &Path) -> std::io::Result<Self> {
        let dir = path.parent().unwrap_or(path);
        let fs = rustix::fs::statvfs(dir)?;
        let file = std::fs::metadata(path)?;
        Ok(Self {
            free: fs.f_bavail.saturating_mul(fs.f_frsize),
            file_len: file.len(),
            file_allocated: file.blocks().saturating_mul(512),
        })
    }
}

pub(super) struct DiskState {
    reserve: AtomicU64,
    watch: Mutex<Watch>,
    /// Held from a look at the room through the stage it allows.
    gate: Mutex<()>,
}

impl Default for DiskState {
    fn default() -> Self {
        Self {
            reserve: AtomicU64::new(DEFAULT_DISK_RESERVE),
            watch: Mutex::new(Watch::default()),
            gate: Mutex::new(()),
        }
    }
}

/// Leave to stage one transaction: there was room when it was given, and no other stage
/// can take that room until it is dropped, after the commit.
pub struct StagingPermit<'j> {
    _gate: MutexGuard<'j, ()>,
}

#[derive(Default)]
struct Watch {
    hold: Option<DiskHold>,
    last_compaction: Option<Compaction>,
}

/// When the file was last compacted, and what the journal held then.
struct Compaction {
    at: Instant,
    rows: u64,
    file_len: u64,
}

/// The least time between two compactions: each holds every journal operation while it runs.
const COMPACT_AT_MOST_EVERY: Duration = Duration::from_secs(10);

impl Watch {
    /// Whether compacting now may give space back: not just done, and the journal has changed
    /// since (the applier drained rows, or the file grew).
    fn compaction_due(&self, rows: u64, file_len: u64) -> bool {
        self.last_compaction.as_ref().is_none_or(|last| {
            last.at.elapsed() >= COMPACT_AT_MOST_EVERY
                && (rows != last.rows || file_len != last.file_len)
        })
    }
}

impl Journal {
    /// Sets the free space staging keeps on the journal's disk (`[journal] disk_reserve_bytes`).
    pub fn set_disk_reserve(&self, bytes: u64) {
        self.disk.reserve.store(bytes, Ordering::Relaxed);
    }

    /// Why staging is held, if it is, as last found by [`Journal::staging_room`].
    pub fn disk_hold(&self) -> Option<DiskHold> {
        self.disk
            .watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .hold
            .clone()
    }

    /// Leave to stage one transaction while there is room, or the hold to wait out (holding
    /// nothing). The readers ask before each stage.
    pub fn staging_permit(&self) -> Result<Result<StagingPermit<'_>, DiskHold>, JournalError> {
        let gate = self
            .disk
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(match self.staging_room()? {
            None => Ok(StagingPermit { _gate: gate }),
            Some(hold) => Err(hold),
        })
    }

    /// Whether there is room to stage: `Ok(None)`, or the hold to wait out. Without room, the
    /// file is compacted first when that may give space back (the readers ask before they
    /// stage, so no other path needs to).
    fn staging_room(&self) -> Result<Option<DiskHold>, JournalError> {
        let reserve = self.disk.reserve.load(Ordering::Relaxed);
        let mut room = self.room()?;
        let mut watch = self
            .disk
            .watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if room.free < room.needed(reserve) {
            let rows = self.journal_bytes()?;
            if watch.compaction_due(rows, room.file_len) {
                self.compact();
                room = self.room()?;
                watch.last_compaction = Some(Compaction {
                    at: Instant::now(),
                    rows,
                    file_len: room.file_len,
                });
            }
        }
        let needed = room.needed(reserve);
        if room.free >= needed {
            if watch.hold.take().is_some() {
                info!(journal = %self.path.display(), "staging resumes: the disk has room again");
            }
            return Ok(None);
        }
        let hold = watch.hold.get_or_insert_with(|| {
            let hold = DiskHold {
                dir: self
                    .path
                    .parent()
                    .unwrap_or(&self.path)
                    .display()
                    .to_string(),
                free: room.free,
                needed,
                since: SystemTime::now(),
            };
            warn!(journal = %self.path.display(), %hold, "journal disk low");
            hold
        });
        hold.free = room.free;
        hold.needed = needed;
        Ok(Some(hold.clone()))
    }

    fn room(&self) -> Result<Room, JournalError> {
        Room::read(&self.path).map_err(|e| {
            JournalError::Disk(format!("the free space of {}: {e}", self.path.display()))
        })
    }

    /// Gives the file's free pages back to its disk. Waits for every operation to end first.
    /// One that fails is logged: staging stays held, and the next drain tries again.
    fn compact(&self) {
        let before = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        let Some(db) = db.as_mut() else {
            return; // being opened again after a fault
        };
        loop {
            match db.compact() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(err) => {
                    return warn!(journal = %self.path.display(), %err, "cannot compact the journal");
                }
            }
        }
        let after = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        info!(journal = %self.path.display(), before, after, "journal compacted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_kept_covers_one_growth_of_the_file_and_what_it_has_not_written() {
        let room = |file_len, file_allocated| Room {
            free: 0,
            file_len,
            file_allocated,
        };
        // A small file: the reserve.
        assert_eq!(room(1 << 20, 1 << 20).needed(64 << 20), 64 << 20);
        // A file larger than the reserve doubles when it grows.
        assert_eq!(room(1 << 30, 1 << 30).needed(64 << 20), 1 << 30);
        // Beyond one region it grows by at most two.
        assert_eq!(room(20 << 30, 20 << 30).needed(64 << 20), 8 << 30);
        // Blocks not yet written are taken when they are.
        assert_eq!(room(1 << 20, 0).needed(64 << 20), (64 << 20) + (1 << 20));
    }

    #[test]
    fn staging_is_held_under_the_room_and_the_hold_says_where_and_how_much() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        journal.set_disk_reserve(0);
        assert_eq!(journal.staging_room().unwrap(), None);
        assert_eq!(journal.disk_hold(), None);

        journal.set_disk_reserve(u64::MAX / 4);
        let hold = journal
            .staging_room()
            .unwrap()
            .expect("no disk has that much free");
        assert_eq!(journal.disk_hold(), Some(hold.clone()));
        let shown = hold.to_string();
        assert!(shown.contains(&dir.path().display().to_string()), "{shown}");
        assert!(shown.contains("MiB free"), "{shown}");

        journal.set_disk_reserve(0);
        assert_eq!(journal.staging_room().unwrap(), None);
        assert_eq!(journal.disk_hold(), None, "released once there is room");
    }
}
