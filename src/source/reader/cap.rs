//! The task's journal cap, as a reader keeps to it between batches.
//!
//! Only rows at or below their channel's tick may be applied, and Milvus writes a channel's
//! rows ahead of the tick that covers them: the tick covering an insert often comes after the
//! next insert. While rows flow, a reader's newest row is then never covered, so it cannot wait
//! for the whole task to fall below the cap (its uncovered rows may be what holds it above,
//! and only reading on brings the tick that lets the applier take them). It waits instead while
//! the applier still has rows of its own channel that the tick covers: those the applier can
//! take without it, and once they are taken it reads on to its next tick.

use std::sync::atomic::{AtomicBool, Ordering};

use super::RECHECK;
use crate::journal::{Journal, JournalError};
use crate::model::vchannel_pchannel;

/// Every row the reader staged (if any) is at or below its channel's tick: the applier may
/// apply them all, so the reader may wait for the task to fall below its cap.
pub(super) fn covered(newest_staged: Option<u64>, tick: u64) -> bool {
    newest_staged.is_some_and(|newest| newest <= tick)
}

/// Bytes `task` may stage before it passes `cap`. Another reader of the task may stage
/// meanwhile, so each of them may pass the cap by at most one batch.
pub(super) fn room(journal: &Journal, task: &str, cap: u64) -> Result<u64, JournalError> {
    Ok(cap.saturating_sub(journal.pending_bytes(task)?))
}

/// Waits while `task` is past `cap` and rows of `pchannel` at or below its `tick` wait to be
/// applied: for a reader whose newest rows its tick does not cover yet. It looks again at each
/// applied batch.
pub(super) fn wait_for_covered_rows(
    journal: &Journal,
    task: &str,
    pchannel: &str,
    tick: u64,
    cap: u64,
    stop: &AtomicBool,
) -> Result<(), JournalError> {
    loop {
        let seen = journal.batches_applied();
        if stop.load(Ordering::Relaxed)
            || journal.pending_bytes(task)? <= cap
            || !covered_rows_pending(journal, task, pchannel, tick)?
        {
            return Ok(());
        }
        journal.wait_for_applied(seen, RECHECK);
    }
}

/// Whether a row of `pchannel` at or below `tick` is staged and not applied.
fn covered_rows_pending(
    journal: &Journal,
    task: &str,
    pchannel: &str,
    tick: u64,
) -> Result<bool, JournalError> {
    for vchannel in journal.vchannels(task)? {
        if vchannel_pchannel(&vchannel) != Some(pchannel) {
            continue;
        }
        let applied = journal.applied(task, &vchannel)?;
        if journal
            .first_position(task, &vchannel, applied, tick)?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}
