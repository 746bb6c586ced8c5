//! The bulk inserts a task has seen complete on the source (see `task::imports`), and the
//! copies they started, written in one transaction.
//!
//! Crash behaviour: the imports seen and the copies they start commit together, checked against
//! the task's run. A crash before the commit sees the imports again on the next scan and starts
//! the same copies; after it, they are seen already and start nothing more.

use std::collections::BTreeSet;

use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::copies::COPIES;
use super::{Journal, JournalError, TaskRun, from_json, json};
use crate::model::CopyProgress;

pub(super) const IMPORTS: TableDefinition<&str, &[u8]> = TableDefinition::new("imports_seen");

/// What a task's scans of the source's bulk inserts have found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportsSeen {
    /// The completed imports the source still lists, by id: as many as the source keeps.
    pub completed: BTreeSet<i64>,
    /// A source timestamp before the last scan began: every import completed before it is in
    /// `completed` (and its copy recorded), so the consistency point may reach it.
    pub checked_ts: u64,
}

impl Journal {
    /// The imports the task has seen, or `None` for a task that never scanned them.
    pub fn imports_seen(&self, task: &str) -> Result<Option<ImportsSeen>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let value = txn.open_table(IMPORTS)?.get(task)?;
        value
            .map(|v| from_json(|| format!("imports seen by {task}"), v.value()))
            .transpose()
    }

    /// Records a scan's imports and the copies the newly completed ones start, in one
    /// transaction.
    pub fn put_imports_seen(
        &self,
        run: &TaskRun,
        seen: &ImportsSeen,
        copies: &[CopyProgress],
    ) -> Result<(), JournalError> {
        let bytes = json(seen)?;
        let copies = copies
            .iter()
            .map(|c| Ok((c.source.id, json(c)?)))
            .collect::<Result<Vec<_>, JournalError>>()?;
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        {
            txn.open_table(IMPORTS)?
                .insert(run.task(), bytes.as_slice())?;
            let mut table = txn.open_table(COPIES)?;
            for (id, copy) in &copies {
                table.insert((run.task(), *id), copy.as_slice())?;
            }
        }
        self.commit(txn)?;
        Ok(())
    }
}
