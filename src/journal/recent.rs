//! Rows staged recently, kept in memory so the applier does not read back from disk what a reader
//! wrote moments before. Reading a row back costs a page-sized allocation, a `pread` and a decode;
//! most rows are applied within seconds of being staged, while still here.
//!
//! This is a cache of the `rows` table, never a replacement: every row is committed to disk
//! first and inserted here after, so a crash loses nothing but the cache. What makes it safe to
//! answer from is its coverage, one window per vchannel:
//!
//! > every journal row of the vchannel after `after` (and at or before `upto`, once the window
//! > is closed) is in `rows`, as of the last stage inserted here.
//!
//! A window opens when a stage's transaction finds no row of the vchannel at or after the first
//! one it stages, so nothing older can hide inside it. It closes, just below the row that did not
//! fit, when the byte budget is spent; rows past a closed window are read from disk. Applied rows
//! leave it from below. The readers' source offsets are mirrored here too and change together with
//! the rows, so a tick read here is never newer than the rows read after it: a row at or below a
//! tick is always visible once the tick is (see [`super::Journal::source_offsets`]).

use super::checkpoint::Marks;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::time::Instant;

use super::offsets::ChannelOffsets;
use super::{Change, RowPosition, SourceOffset};
use crate::model::MetaOffset;

/// A staged row as the cache keeps it: decoded, with its size on disk for the batch limits.
#[derive(Debug, Clone)]
pub(super) struct CachedRow {
    pub change: Change,
    pub encoded_len: usize,
}

#[derive(Debug, Default)]
struct Window {
    after: Option<RowPosition>,
    /// None while the window is open: it covers everything after `after`.
    upto: Option<RowPosition>,
    rows: BTreeMap<RowPosition, CachedRow>,
}

impl Window {
    fn covers(&self, position: RowPosition) -> bool {
        Some(position) > self.after && self.upto.is_none_or(|upto| position <= upto)
    }
}

/// What the cache can say about a vchannel's rows after a position.
#[derive(Debug)]
pub(super) enum Coverage {
    /// These are the rows after the position through `through`, as far as the limit let them
    /// in.
    Rows {
        rows: Vec<(RowPosition, CachedRow)>,
        through: RowPosition,
    },
    /// The cache has none of them: read the disk, through `until` (None: to the end).
    Disk { until: Option<RowPosition> },
}

pub(super) struct RecentRows {
    budget: usize,
    bytes: usize,
    /// `(task, vchannel)` → its window.
    windows: HashMap<(String, String), Window>,
    /// `(task, pchannel)` → the reader's offset, as of the last stage inserted here.
    pub offsets: ChannelOffsets<SourceOffset>,
    /// `(task, channel)` → the metadata watcher's offset, likewise.
    pub meta_offsets: ChannelOffsets<MetaOffset>,
    /// `(task, vchannel)` of every vchannel with rows to apply, and of some without (all
    /// applied since): the planner looks at each, so it need not search the disk for them.
    vchannels: BTreeSet<(String, String)>,
    /// When applied rows last left the cache: readers stay within it while an applier drains it.
    drained: Option<Instant>,
    /// Stages committed since the journal was opened: an idle applier waits for the next.
    stages: u64,
    /// Batches applied since the journal was opened: a reader held back for room waits for the
    /// next.
    batches_applied: u64,
    /// Each channel's offsets after its recent stages, for checkpoints.
    pub marks: Marks,
}

/// How much the cache can still take, and whether it is being drained.
#[derive(Debug, Clone, Copy)]
pub struct RecentRoom {
    pub held_bytes: usize,
    pub free_bytes: usize,
    /// When applied rows last left the cache, if ever since the journal was opened.
    pub drained: Option<Instant>,
}

/// The position just before `position`: the exclusive start of a window that holds it.
fn before(position: RowPosition) -> Option<RowPosition> {
    match position {
        RowPosition { ts: 0, seq: 0 } => None,
        RowPosition { ts, seq: 0 } => Some(RowPosition {
            ts: ts - 1,
            seq: u64::MAX,
        }),
        RowPosition { ts, seq } => Some(RowPosition { ts, seq: seq - 1 }),
    }
}

impl RecentRows {
    pub fn new(
        budget: usize,
        offsets: ChannelOffsets<SourceOffset>,
        meta_offsets: ChannelOffsets<MetaOffset>,
        vchannels: BTreeSet<(String, String)>,
    ) -> Self {
        Self {
            budget,
            bytes: 0,
            windows: HashMap::new(),
            offsets,
            meta_offsets,
            vchannels,
            drained: None,
            stages: 0,
            batches_applied: 0,
            marks: Marks::default(),
        }
    }

    pub fn stages(&self) -> u64 {
        self.stages
    }

    pub fn batches_applied(&self) -> u64 {
        self.batches_applied
    }

    pub fn room(&self) -> RecentRoom {
        RecentRoom {
            held_bytes: self.bytes,
            free_bytes: self.budget.saturating_sub(self.bytes),
            drained: self.drained,
        }
    }

    /// The vchannels of `task` with rows to apply, perhaps with some without.
    pub fn vchannels(&self, task: &str) -> Vec<String> {
        let from = (task.to_owned(), String::new());
        self.vchannels
            .range(from..)
            .take_while(|(t, _)| t == task)
            .map(|(_, vchannel)| vchannel.clone())
            .collect()
    }

    /// Whether `vchannel` has a window; a stage looks for older rows of one that has not.
    pub fn has_window(&self, task: &str, vchannel: &str) -> bool {
        self.windows
            .contains_key(&(task.to_owned(), vchannel.to_owned()))
    }

    /// A committed stage's rows in staging order. `openable` maps a vchannel without a window
    /// to its first staged position, when the stage's transaction found no row of it at or
    /// after that position: a window may start there.
    pub fn staged(
        &mut self,
        task: &str,
        rows: Vec<(String, RowPosition, CachedRow)>,
        mut openable: HashMap<String, RowPosition>,
    ) {
        self.stages += 1;
        for (vchannel, position, row) in rows {
            let key = (task.to_owned(), vchannel);
            if !self.vchannels.contains(&key) {
                self.vchannels.insert(key.clone());
            }
            // Once per stage: a window this stage closed at once covers none of its later rows.
            if let Some(first) = openable.remove(&key.1)
                && !self.windows.contains_key(&key)
            {
                let window = Window {
                    after: before(first),
                    ..Window::default()
                };
                self.windows.insert(key.clone(), window);
            }
            let Some(window) = self.windows.get_mut(&key) else {
                continue;
            };
            if !window.covers(position) {
                continue;
            }
            if self.bytes + row.encoded_len <= self.budget {
                self.bytes += row.encoded_len;
                if let Some(replaced) = window.rows.insert(position, row) {
                    self.bytes -= replaced.encoded_len;
                }
                continue;
            }
            // Out of budget: the window ends just below this row, which only the disk has.
            let dropped = window.rows.split_off(&position);
            self.bytes -= dropped.values().map(|r| r.encoded_len).sum::<usize>();
            window.upto = before(position);
            if window.upto <= window.after {
                self.windows.remove(&key);
            }
        }
    }

    /// A batch was applied: counted once its vchannels are each [`applied`](Self::applied).
    pub fn batch_applied(&mut self) {
        self.batches_applied += 1;
    }

    /// The target has `vchannel`'s rows through `end`: they leave the cache.
    pub fn applied(&mut self, task: &str, vchannel: &str, end: RowPosition) {
        let key = (task.to_owned(), vchannel.to_owned());
        let Some(window) = self.windows.get_mut(&key) else {
            return;
        };
        let mut freed = 0;
        window.rows.retain(|position, row| {
            let keep = *position > end;
            if !keep {
                freed += row.encoded_len;
            }
            keep
        });
        self.bytes -= freed;
        if freed > 0 {
            self.drained = Some(Instant::now());
        }
        window.after = window.after.max(Some(end));
        match window.upto {
            // Open and empty: the vchannel has no rows left.
            None if window.rows.is_empty() => {
                self.vchannels.remove(&key);
            }
            Some(upto) if Some(upto) <= window.after => {
                self.windows.remove(&key);
            }
            _ => {}
        }
    }

    /// Forgets everything of `task`.
    pub fn remove_task(&mut self, task: &str) {
        let mut freed = 0;
        self.windows.retain(|(t, _), window| {
            let keep = t != task;
            if !keep {
                freed += window.rows.values().map(|r| r.encoded_len).sum::<usize>();
            }
            keep
        });
        self.bytes -= freed;
        self.offsets.forget_task(task);
        self.meta_offsets.forget_task(task);
        self.marks.forget_task(task);
        self.vchannels.retain(|(t, _)| t != task);
    }

    /// The rows of `vchannel` after `after` through `through`, as far as the window covers them
    /// and `admit` lets them in (it is asked with each row's size, in order, and stops at the
    /// first refusal).
    pub fn rows(
        &self,
        task: &str,
        vchannel: &str,
        after: Option<RowPosition>,
        through: RowPosition,
        admit: &mut impl FnMut(usize) -> bool,
    ) -> Coverage {
        let window = self.windows.get(&(task.to_owned(), vchannel.to_owned()));
        let covering =
            window.filter(|w| w.after <= after && w.upto.is_none_or(|upto| after < Some(upto)));
        let Some(window) = covering else {
            // The disk, until a window that starts further on.
            let until = window.and_then(|w| w.after).filter(|&a| Some(a) > after);
            return Coverage::Disk { until };
        };
        let through = window.upto.map_or(through, |upto| upto.min(through));
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let rows = window
            .rows
            .range((start, Bound::Included(through)))
            .take_while(|(_, row)| admit(row.encoded_len))
            .map(|(position, row)| (*position, row.clone()))
            .collect();
        Coverage::Rows { rows, through }
    }

    /// Drops every window, keeping the offsets: what a panic may have left half-updated.
    pub fn clear_rows(&mut self) {
        self.windows.clear();
        self.bytes = 0;
    }
}
