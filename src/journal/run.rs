//! Runs: which threads may write a task's journal state.
//!
//! Every start of a task (create, resume, restart) begins a new run, numbered one above the
//! last ([`Journal::begin_run`]). The threads of a run carry its [`TaskRun`], and every transaction
//! that writes the task's rows, offsets, applied positions or in-flight marker first checks
//! that the run is still the task's current one, inside the same transaction. So a thread of an
//! earlier run that is still going (a stop that did not reach it, a thread that outlived its
//! supervisor) can never stage or apply once a newer run has begun: its write fails with
//! [`JournalError::StaleRun`] and it stops.
//!
//! Run numbers only grow: a deleted task keeps its last number, so a thread of the deleted task
//! cannot write into a task created again under the same id.

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::{Journal, JournalError};

pub(super) const RUNS: TableDefinition<&str, u64> = TableDefinition::new("runs");

/// The right to write one task's journal state, for as long as no newer run has begun.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRun {
    task: String,
    number: u64,
}

impl TaskRun {
    /// The run of a task before any [`Journal::begin_run`]: for tests and tools that write a
    /// journal without running the task.
    pub fn unstarted(task: &str) -> Self {
        Self {
            task: task.to_owned(),
            number: 0,
        }
    }

    pub fn task(&self) -> &str {
        &self.task
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    /// Fails unless this is the task's current run; call inside every write transaction.
    pub(super) fn check(&self, txn: &WriteTransaction) -> Result<(), JournalError> {
        let current = txn
            .open_table(RUNS)?
            .get(self.task.as_str())?
            .map_or(0, |v| v.value());
        if current == self.number {
            Ok(())
        } else {
            Err(JournalError::StaleRun {
                task: self.task.clone(),
                run: self.number,
                current,
            })
        }
    }
}

/// Ends `task`'s current run inside `txn`, as a new run would begin: the number moves on.
pub(super) fn end_run(txn: &WriteTransaction, task: &str) -> Result<u64, JournalError> {
    let mut runs = txn.open_table(RUNS)?;
    let number = runs.get(task)?.map_or(0, |v| v.value()) + 1;
    runs.insert(task, number)?;
    Ok(number)
}

impl Journal {
    /// Begins a new run of `task`: from now on only the returned run may write its state.
    pub fn begin_run(&self, task: &str) -> Result<TaskRun, JournalError> {
        self.begin_run_at(task, 0)
    }

    /// [`begin_run`](Self::begin_run), numbered at least `at_least`: in a group, the etcd
    /// revision of the claim that made this member the task's owner, so that a run of an
    /// earlier ownership here is older than every run of a later one.
    pub fn begin_run_at(&self, task: &str, at_least: u64) -> Result<TaskRun, JournalError> {
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        let mut number = end_run(&txn, task)?;
        if number < at_least {
            txn.open_table(RUNS)?.insert(task, at_least)?;
            number = at_least;
        }
        self.commit(txn)?;
        Ok(TaskRun {
            task: task.to_owned(),
            number,
        })
    }
}
