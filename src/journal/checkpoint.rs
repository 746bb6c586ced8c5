//! What another appliance needs to carry a task on where this one applied it (a group's
//! takeover), and how it starts from it with an empty journal.
//!
//! A row's sequence number counts the rows staged from its channel, so every row staged before
//! a given stage has a lower one. Each stage leaves a *mark*: the channel's offset after it and
//! the sequence number it reached. A channel's checkpoint is the newest mark below every row of
//! its vchannels still pending: each row read before that offset is on the target. A reader
//! started there reads again only rows that may be on the target already, or are not yet.
//!
//! The marks live in memory (a few hundred per channel): after a restart a channel's checkpoint
//! moves again once its oldest pending row is past a new mark, or once nothing is pending.
//! Until every channel has one, a task has no checkpoint.
//!
//! Crash behaviour of [`Journal::restore`]: it writes the offsets, copies and replay bound one
//! transaction each, before the task's record; the caller empties the task first, so a restore
//! that died half-way is begun again from nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};

use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::imports::ImportsSeen;
use super::{Journal, JournalError, ROWS, TaskRun};
use crate::model::{
    CopyProgress, CopyState, MetaOffset, Recopy, SourceOffset, is_meta_channel, vchannel_pchannel,
};

/// `task` → the source timestamp through which a takeover applies the task's changes as
/// replays (inserts as upserts): the previous owner may have applied any of them.
pub(super) const TAKEOVERS: TableDefinition<&str, u64> = TableDefinition::new("takeovers");

/// Marks kept per channel: stages of up to 8 MiB each, so far more than a journal's backlog
/// a checkpoint every few seconds has to see past.
const MARKS_PER_CHANNEL: usize = 512;

/// A channel's offset after a stage, and the sequence number of the next row staged after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    pub next_seq: u64,
    pub offset: ChannelCheckpoint,
}

/// Where one channel's reader (or the metadata watcher) carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelCheckpoint {
    Reader(SourceOffset),
    Watcher(MetaOffset),
}

/// A task's state as another appliance needs it to carry it on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Per channel (physical, replicate or metadata): where reading carries on.
    pub channels: BTreeMap<String, ChannelCheckpoint>,
    /// The snapshot copies, as far as they had got.
    pub copies: Vec<CopyProgress>,
    pub imports_seen: Option<ImportsSeen>,
}

/// Each channel's recent marks, oldest first.
#[derive(Default)]
pub(super) struct Marks(HashMap<(String, String), VecDeque<Mark>>);

impl Marks {
    pub(super) fn record(&mut self, task: &str, channel: &str, mark: Mark) {
        let marks = self
            .0
            .entry((task.to_owned(), channel.to_owned()))
            .or_default();
        if marks.len() == MARKS_PER_CHANNEL {
            marks.pop_front();
        }
        marks.push_back(mark);
    }

    /// The newest mark of `channel` at or below `seq`.
    fn below(&self, task: &str, channel: &str, seq: u64) -> Option<ChannelCheckpoint> {
        let marks = self.0.get(&(task.to_owned(), channel.to_owned()))?;
        marks
            .iter()
            .rev()
            .find(|m| m.next_seq <= seq)
            .map(|m| m.offset)
    }

    fn of_task(&self, task: &str) -> Marks {
        Marks(
            self.0
                .iter()
                .filter(|((t, _), _)| t == task)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }

    pub(super) fn forget_task(&mut self, task: &str) {
        self.0.retain(|(t, _), _| t != task);
    }
}

impl Journal {
    /// The task's checkpoint now (see the module), or None while some channel has none.
    /// `previous` is the last one taken: a channel whose pending rows all predate its marks
    /// keeps its offset from there.
    pub fn checkpoint(
        &self,
        task: &str,
        previous: Option<&Checkpoint>,
    ) -> Result<Option<Checkpoint>, JournalError> {
        // Offsets and marks before the rows: a row staged in between is past both.
        let (current, marks): (Vec<(String, ChannelCheckpoint)>, _) = {
            let recent = self.recent();
            let readers = recent.offsets.of_task(task).into_iter();
            let readers = readers.map(|(c, o)| (c, ChannelCheckpoint::Reader(o)));
            let watchers = recent.meta_offsets.of_task(task).into_iter();
            let watchers = watchers.map(|(c, o)| (c, ChannelCheckpoint::Watcher(o)));
            (
                readers.chain(watchers).collect(),
                recent.marks.of_task(task),
            )
        };
        let pending = self.lowest_pending_seqs(task)?;
        let mut channels = BTreeMap::new();
        for (channel, offset) in current {
            let at = match pending.get(&channel) {
                None => Some(offset),
                Some(&seq) => marks
                    .below(task, &channel, seq)
                    .or_else(|| previous.and_then(|p| p.channels.get(&channel).copied())),
            };
            match at {
                Some(at) => channels.insert(channel, at),
                None => return Ok(None),
            };
        }
        Ok(Some(Checkpoint {
            channels,
            copies: self.copies(task)?,
            imports_seen: self.imports_seen(task)?,
        }))
    }

    /// Per channel, the lowest sequence number of a row of `task` not applied yet.
    fn lowest_pending_seqs(&self, task: &str) -> Result<HashMap<String, u64>, JournalError> {
        let applied: HashMap<String, _> = self.applied_positions(task)?.into_iter().collect();
        let db = self.db()?;
        let txn = db.begin_read()?;
        let rows = txn.open_table(ROWS)?;
        let mut lowest: HashMap<String, u64> = HashMap::new();
        for vchannel in self.vchannels(task)? {
            let Some(channel) = vchannel_pchannel(&vchannel) else {
                continue;
            };
            let from = applied.get(&vchannel).map_or((0, 0), |p| (p.ts, p.seq));
            for entry in rows.range(
                (task, vchannel.as_str(), from.0, from.1)
                    ..=(task, vchannel.as_str(), u64::MAX, u64::MAX),
            )? {
                let (key, _) = entry?;
                let (_, _, ts, seq) = key.value();
                if applied.contains_key(&vchannel) && (ts, seq) == from {
                    continue;
                }
                let low = lowest.entry(channel.to_owned()).or_insert(seq);
                *low = (*low).min(seq);
            }
        }
        Ok(lowest)
    }

    /// Starts the (empty) task where `checkpoint` says, its changes through `replay_through`
    /// applied as replays. A copy under way goes on with every page an upsert: the previous
    /// owner may have sent pages past its record.
    pub fn restore(
        &self,
        run: &TaskRun,
        checkpoint: &Checkpoint,
        replay_through: u64,
    ) -> Result<(), JournalError> {
        for (channel, at) in &checkpoint.channels {
            match at {
                ChannelCheckpoint::Reader(o) => {
                    self.stage_read(run, channel, &[], o.next, o.last, o.tick)?
                }
                ChannelCheckpoint::Watcher(o) if is_meta_channel(channel) => {
                    self.stage_meta(run, channel, &[], o.next_revision, o.tick)?
                }
                ChannelCheckpoint::Watcher(_) => {
                    return Err(JournalError::Corrupt {
                        what: format!("checkpoint of {}", run.task()),
                        reason: format!("{channel} is no metadata channel"),
                    });
                }
            }
        }
        for copy in &checkpoint.copies {
            let mut copy = copy.clone();
            if matches!(copy.state, CopyState::Copying { .. }) && copy.recopy.is_none() {
                copy.recopy = Some(Recopy {
                    cause: "taken over from another appliance".into(),
                    holds_from: copy.start_ts,
                    segments: Vec::new(),
                });
            }
            self.put_copy(run, &copy)?;
        }
        let db = self.db()?;
        let txn = self.begin_write(&db)?;
        run.check(&txn)?;
        txn.open_table(TAKEOVERS)?
            .insert(run.task(), replay_through)?;
        self.commit(txn)?;
        if let Some(seen) = &checkpoint.imports_seen {
            self.put_imports_seen(run, seen, &[])?;
        }
        Ok(())
    }

    /// The source timestamp through which the task's changes are applied as replays since a
    /// takeover (0: none).
    pub fn replay_through(&self, task: &str) -> Result<u64, JournalError> {
        let db = self.db()?;
        let txn = db.begin_read()?;
        Ok(txn
            .open_table(TAKEOVERS)?
            .get(task)?
            .map_or(0, |v| v.value()))
    }
}
