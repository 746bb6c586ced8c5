//! The apply stage: drains one task's journal to the target, in order and exactly once.
//!
//! It owns the apply side of the task's journal (each vchannel's applied position, and the
//! in-flight marker) and every call made to the target. Of the source it knows only what the
//! source stage staged: rows, and each channel's latest tick.
//!
//! - `applier`: the [`Applier`]: [`Applier::recover`] once, then [`Applier::step`] after step,
//!   each applying one DDL or a run of data batches.
//! - `order`: which rows are due, across vchannels: ticks, barriers, waits.
//! - `calls`: one vchannel's due rows as target calls; `columns`: insert columns merged
//!   without decoding them.
//! - `run`: the pipelined run of data batches; `retry`: how target calls are retried.
//! - `isolate`: a batch the target refuses for good, taken apart to find the row it refuses.
//! - `milvus`: the target Milvus.
//!
//! Invariants, each written down on the function that enforces it:
//! - Per vchannel, rows reach the target in journal order; a batch is a prefix of the pending
//!   rows and never splits a timestamp (`calls::next_step`, `order::Pending::due`).
//! - A row is due once its channel's tick has reached its timestamp
//!   (`order::Pending::up_to_tick`).
//! - A DDL goes alone, once its barrier is reached and, for an event of the replicate channel
//!   (the vchannel of the `{prefix}-replicate-msg` topic), once the vchannels it waits for are
//!   applied through its timestamp (`order::Pending::applicable`); the oldest first
//!   (`Applier::apply_ddl_heads`); before data (`Applier::step`).
//! - Nothing reaches the target before a committed marker covers it, and the marker narrows
//!   only in the transaction that commits the applied positions (`Applier::step`,
//!   `Applier::apply_ddl_heads`, `run::Run::drive`).
//! - A call the target may already have is sent as a replay: inserts become upserts
//!   (`Applier::recover`, `retry::Retries::run`).
//! - Nothing is passed over unasked: a batch the target refuses for a permanent reason is
//!   taken apart row by row ([`Applier::isolate`]) and the task stops on the row refused,
//!   until an operator approves skipping exactly that row (or the task has `skip_poison`).
//!   A refusal that is not of the row (credentials, privileges, a database or collection gone
//!   from the target: [`TargetError::Blocked`]) is never a poison: it waits, retried. Rows
//!   of a collection that neither the target nor the source has any more (the source dropped
//!   it, and its later namesake came and went on the target first) are moot, and passed over
//!   ([`SourceCatalog`]): its drop follows them.
//!
//! Crash behaviour, per batch:
//! 1. [`Journal::begin_batch`] commits an in-flight marker naming the batch's rows.
//! 2. The target calls are made (retried while the error is transient, or while the target
//!    refuses every call: [`TargetError::Blocked`]).
//! 3. [`Journal::commit_batch`] moves the applied positions and clears the marker together.
//!
//! A crash before 1 leaves the rows pending: they are sent later, once. A crash between 1 and 3
//! leaves the marker: [`Applier::recover`] sends exactly those rows again before anything else,
//! inserts as upserts, so rows the target already has are replaced rather than doubled;
//! deletes are idempotent, and so is each DDL on the target ([`Target::apply_ddl`]). A crash
//! after 3 has nothing to redo.
//!
//! Data batches are pipelined (`run`): while one thread sends them, the applier reads the next
//! batch ahead and commits the acknowledged ones, so the target never waits for the journal.
//! Step 3 of the acknowledged batches and step 1 of the next batch are then one transaction,
//! and the marker covers every batch queued or being sent (each vchannel's latest end). A
//! crash at any point leaves a marker that covers every row sent or about to be sent after
//! the applied positions: the replay above sends them again as upserts.
//!
//! [`Journal::begin_batch`]: crate::journal::Journal::begin_batch
//! [`Journal::commit_batch`]: crate::journal::Journal::commit_batch

mod applier;
pub mod calls;
pub mod columns;
mod isolate;
pub mod milvus;
mod order;
mod retry;
mod run;

use std::time::Duration;

use crate::journal::JournalError;
use calls::{Call, UndecodableRow};

pub use crate::model::Ddl;
pub use applier::Applier;
pub use isolate::Isolated;
pub use order::NOT_READY_RECHECK;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Worth retrying: the target is unreachable, overloaded or not ready.
    #[error("target unavailable: {0}")]
    Transient(String),
    /// Retrying cannot help: the task fails with this reason.
    #[error("target rejected the change: {0}")]
    Permanent(String),
    /// The target refuses the task's calls whatever rows they carry: its credentials or
    /// privileges, or a database, collection or partition it no longer has (dropped or renamed
    /// behind the appliance's back). It names no row, so it is never a poison: the task waits,
    /// retrying with backoff as for an outage, until an operator repairs the target.
    #[error("target refuses the task's calls, waiting until it is repaired: {0}")]
    Blocked(String),
}

impl TargetError {
    /// Whether the call is tried again (after a pause): everything but a refusal of the
    /// change itself.
    pub fn retried(&self) -> bool {
        !matches!(self, TargetError::Permanent(_))
    }
}

/// What the applier may ask of the source: whether a collection is still there. Asked only of
/// a collection the target does not have, to tell one dropped on the source (its rows are moot)
/// from one dropped on the target behind the appliance's back (they wait for a repair).
pub trait SourceCatalog: Send + Sync {
    /// Whether the source has collection `id` in state created (not dropped, nor being
    /// dropped); an error when it cannot say now.
    fn is_live(&self, id: i64) -> Result<bool, String>;
}

/// Where changes are applied. Data calls run on a thread of their own while the applier reads
/// ahead, hence `Send`.
pub trait Target: Send {
    /// Applies data calls in lanes (a lane per vchannel, or one of calls merged across them):
    /// the lanes are independent of each other, so a target may run them concurrently; the
    /// calls of one lane go in order. `replay` marks calls the target may already have:
    /// inserts must then replace rows with the same primary keys, not add them.
    fn apply_data(&mut self, lanes: &[Vec<Call>], replay: bool) -> Result<(), TargetError>;
    /// Applies one DDL event. Must be idempotent: after a crash the event may come again, and
    /// must then leave the target as one application would.
    fn apply_ddl(&mut self, ddl: &Ddl) -> Result<(), TargetError>;
    /// Why the target cannot take `ddl` yet (a load before its index exists there, a drop of a
    /// database whose collections are still being dropped, a collection re-created under a
    /// reused name while the older one's drop is still to come), or None when it can. The event
    /// then stays pending, without an in-flight marker, and the rest of the journal moves on:
    /// what it waits for may well be behind it in the same applier.
    fn not_ready(&mut self, _ddl: &Ddl) -> Result<Option<String>, TargetError> {
        Ok(None)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Undecodable(#[from] UndecodableRow),
    #[error(transparent)]
    Target(#[from] TargetError),
}

#[derive(Debug, Clone)]
pub struct ApplierSettings {
    pub max_batch_rows: usize,
    pub max_batch_bytes: usize,
    /// Merged target calls stay under this size (see `ApplyConfig::max_call_bytes`).
    pub max_call_bytes: usize,
    /// Keep applied rows in the journal (for inspection) instead of deleting them.
    pub retain_applied: bool,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub retry_attempts: usize,
}

impl Default for ApplierSettings {
    fn default() -> Self {
        Self {
            max_batch_rows: 512,
            max_batch_bytes: 4 << 20,
            max_call_bytes: 4 << 20,
            retain_applied: false,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            retry_attempts: 8,
        }
    }
}

#[cfg(test)]
mod order_tests;
#[cfg(test)]
mod tests;
