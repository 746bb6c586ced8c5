//! The journal's format version: which layout of tables and encodings the file holds.
//!
//! Stored in the `format` table under `version`, written when the file is created. A file
//! without it was written before versions were stored: that is format 1, read as it is and
//! stamped at open. A file of a format newer than [`CURRENT`] is refused, by `serve` and `dump`
//! alike, before anything else in it is read or written: a newer release may have changed what
//! a table's bytes mean, and this one would misread them. An older format is brought up to date
//! in the transaction that stamps it.
//!
//! Formats:
//! - 1: the first.
//! - 2: a snapshot copy's progress may say how far its pages in flight reached
//!   (`CopyState::Copying::doubt_through`). A release of format 1 would read such a progress
//!   without it and send only the next page as an upsert, doubling rows of the others. A file of
//!   format 1 is read as it is: its progress in doubt covers its next page, as it did.
//!
//! The `format` table's shape (`&str` → `u64`) never changes, so every release can read it.

use std::path::Path;

use redb::{ReadTransaction, ReadableTable, TableDefinition, TableError, WriteTransaction};

use super::JournalError;

/// The format this code writes, and the newest it reads.
pub const CURRENT: u64 = 2;
/// The format of a file that has tables but no version: what every release before versions wrote.
const UNVERSIONED: u64 = 1;

const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("format");
const VERSION: &str = "version";

/// First in the open's write transaction: refuses a newer format (the transaction is then
/// dropped, so nothing is written) and stamps [`CURRENT`] on a file that lacks it. Answers the
/// format the file had.
pub(super) fn check_and_stamp(txn: &WriteTransaction, path: &Path) -> Result<u64, JournalError> {
    // Looked at before the format table is created below: a file with no table is new.
    let new_file = txn.list_tables()?.next().is_none();
    let mut table = txn.open_table(FORMAT)?;
    let stored = table.get(VERSION)?.map(|v| v.value());
    let found = match stored {
        Some(version) => version,
        None if new_file => CURRENT,
        None => UNVERSIONED,
    };
    readable(path, found)?;
    if stored != Some(CURRENT) {
        table.insert(VERSION, CURRENT)?;
    }
    Ok(found)
}

/// For a read-only open (`dump`): refuses a newer format; an unversioned file is format 1.
pub(super) fn check_read(txn: &ReadTransaction, path: &Path) -> Result<u64, JournalError> {
    let found = stored(txn)?.unwrap_or(UNVERSIONED);
    readable(path, found)?;
    Ok(found)
}

/// The version stored, if any.
pub(super) fn stored(txn: &ReadTransaction) -> Result<Option<u64>, JournalError> {
    match txn.open_table(FORMAT) {
        Ok(table) => Ok(table.get(VERSION)?.map(|v| v.value())),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(other) => Err(other.into()),
    }
}

fn readable(path: &Path, found: u64) -> Result<(), JournalError> {
    match found {
        0 => Err(JournalError::Corrupt {
            what: format!("format version of {}", path.display()),
            reason: "0 is no format (they start at 1)".into(),
        }),
        1..=CURRENT => Ok(()),
        newer => Err(JournalError::NewerFormat {
            path: path.to_owned(),
            found: newer,
            known: CURRENT,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::journal::dump::JournalSnapshot;
    use crate::journal::run::TaskRun;
    use crate::model::MqPosition;
    use redb::{Database, ReadableDatabase};

    /// Writes `version` (or removes the table, for `None`) straight into the closed journal.
    fn set_version(dir: &Path, version: Option<u64>) {
        let db = Database::create(dir.join("journal.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        match version {
            Some(v) => {
                txn.open_table(FORMAT).unwrap().insert(VERSION, v).unwrap();
            }
            None => {
                txn.delete_table(FORMAT).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn version_in(dir: &Path) -> Option<u64> {
        let db = Database::create(dir.join("journal.redb")).unwrap();
        stored(&db.begin_read().unwrap()).unwrap()
    }

    /// A closed journal holding one task and one channel's offset.
    fn journal_with_a_task() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        j.put_task("t", b"spec").unwrap();
        let at = MqPosition::Kafka { next_offset: 7 };
        j.stage(&TaskRun::unstarted("t"), "p0", &[], at, 12)
            .unwrap();
        dir
    }

    #[test]
    fn a_new_journal_carries_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.format_version().unwrap(), Some(CURRENT));
    }

    #[test]
    fn an_unversioned_journal_is_format_1_read_as_it_is_and_stamped_at_open() {
        let dir = journal_with_a_task();
        set_version(dir.path(), None);
        assert_eq!(version_in(dir.path()), None);
        // `dump` reads it as it is, and writes nothing.
        assert!(JournalSnapshot::open(dir.path()).is_ok());
        assert_eq!(version_in(dir.path()), None);

        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.format_version().unwrap(), Some(CURRENT));
        assert_eq!(j.task("t").unwrap().as_deref(), Some(&b"spec"[..]));
        let offset = j.source_offset("t", "p0").unwrap().unwrap();
        assert_eq!(
            (offset.next, offset.tick),
            (MqPosition::Kafka { next_offset: 7 }, 12)
        );
    }

    #[test]
    fn a_journal_of_a_newer_format_is_refused_at_open_naming_both_formats_and_left_as_it_was() {
        let dir = journal_with_a_task();
        set_version(dir.path(), Some(CURRENT + 1));
        let err = Journal::open(dir.path()).err().expect("refused");
        assert!(
            matches!(err, JournalError::NewerFormat { found, known, .. }
                if found == CURRENT + 1 && known == CURRENT),
            "{err:?}"
        );
        let message = err.to_string();
        let path = dir.path().join("journal.redb");
        for part in [
            path.display().to_string(),
            format!("journal format {}", CURRENT + 1),
            format!("reads formats up to {CURRENT}"),
            "run the newer release".into(),
        ] {
            assert!(message.contains(&part), "{message:?} lacks {part:?}");
        }
        assert_eq!(version_in(dir.path()), Some(CURRENT + 1), "nothing written");
    }

    #[test]
    fn a_journal_of_a_newer_format_is_refused_by_dump_naming_both_formats() {
        let dir = journal_with_a_task();
        set_version(dir.path(), Some(CURRENT + 1));
        let err = JournalSnapshot::open(dir.path()).err().expect("refused");
        let message = err.to_string();
        assert!(
            matches!(err, JournalError::NewerFormat { found, known, .. }
                if found == CURRENT + 1 && known == CURRENT),
            "{err:?}"
        );
        assert!(
            message.contains(&format!("journal format {}", CURRENT + 1))
                && message.contains(&format!("reads formats up to {CURRENT}")),
            "{message}"
        );
    }

    #[test]
    fn a_format_version_of_0_is_corrupt_not_read() {
        let dir = journal_with_a_task();
        set_version(dir.path(), Some(0));
        let err = Journal::open(dir.path()).err().expect("refused");
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err:?}");
    }
}
