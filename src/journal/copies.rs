//! The progress of a task's snapshot copies, one record per collection.
//!
//! Crash behaviour: each record is written in one transaction that checks the task's run. The
//! copier marks a page in doubt before sending it and moves past it once the target has
//! acknowledged it, so after a crash the page that may be on the target is sent again as an
//! upsert, and no page is skipped.

use redb::{ReadableDatabase, TableDefinition};

use super::{Journal, JournalError, TaskRun, from_json};
use crate::model::CopyProgress;

pub(super) const COPIES: TableDefinition<(&str, i64), &[u8]> =
    TableDefinition::new("snapshot_copies");

impl Journal {
    /// Records how far the copy of one collection has got.
    pub fn put_copy(&self, run: &TaskRun, copy: &CopyProgress) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec(copy).map_err(|e| JournalError::Corrupt {
            what: format!("snapshot copy of {}", copy.source.name),
            reason: e.to_string(),
        })?;
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        txn.open_table(COPIES)?
            .insert((run.task(), copy.source.id), bytes.as_slice())?;
        self.commit(txn)?;
        Ok(())
    }

    /// The task's snapshot copies, by source collection id.
    pub fn copies(&self, task: &str) -> Result<Vec<CopyProgress>, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        let table = txn.open_table(COPIES)?;
        let mut out = Vec::new();
        for entry in table.range((task, i64::MIN)..=(task, i64::MAX))? {
            let (key, value) = entry?;
            let (_, id) = key.value();
            out.push(from_json(
                || format!("snapshot copy of collection {id} of task {task}"),
                value.value(),
            )?);
        }
        Ok(out)
    }
}
