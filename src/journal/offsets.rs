//! What a stage records for its channel beside its rows, in the same transaction: a reader's
//! [`SourceOffset`], the metadata watcher's [`MetaOffset`]. Both carry on their channel's row
//! sequence and tick; they differ only in where their source resumes.

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::checkpoint::ChannelCheckpoint;
use super::{JournalError, META_OFFSETS, SOURCE_OFFSETS, from_json};
use crate::model::{MetaOffset, SourceOffset};

pub(super) trait StagedOffset: Copy + Serialize + DeserializeOwned {
    /// The table that keeps it, by `(task, channel)`, as JSON.
    const TABLE: TableDefinition<'static, (&'static str, &'static str), &'static [u8]>;
    /// What it is, for errors.
    const WHAT: &'static str;
    fn tick(&self) -> u64;
    fn next_seq(&self) -> u64;
    /// As a checkpoint keeps it.
    fn checkpoint(self) -> ChannelCheckpoint;
}

impl StagedOffset for SourceOffset {
    const TABLE: TableDefinition<'static, (&'static str, &'static str), &'static [u8]> =
        SOURCE_OFFSETS;
    const WHAT: &'static str = "source offset";
    fn tick(&self) -> u64 {
        self.tick
    }
    fn next_seq(&self) -> u64 {
        self.next_seq
    }
    fn checkpoint(self) -> ChannelCheckpoint {
        ChannelCheckpoint::Reader(self)
    }
}

impl StagedOffset for MetaOffset {
    const TABLE: TableDefinition<'static, (&'static str, &'static str), &'static [u8]> =
        META_OFFSETS;
    const WHAT: &'static str = "metadata offset";
    fn tick(&self) -> u64 {
        self.tick
    }
    fn next_seq(&self) -> u64 {
        self.next_seq
    }
    fn checkpoint(self) -> ChannelCheckpoint {
        ChannelCheckpoint::Watcher(self)
    }
}

/// `(task, channel)` → its offset, as of the last stage committed.
pub(super) struct ChannelOffsets<O>(HashMap<(String, String), O>);

impl<O: StagedOffset> ChannelOffsets<O> {
    /// Every offset of the journal's table.
    pub fn read(txn: &ReadTransaction) -> Result<Self, JournalError> {
        let mut offsets = HashMap::new();
        for entry in txn.open_table(O::TABLE)?.iter()? {
            let (k, v) = entry?;
            let (task, channel) = k.value();
            let offset = from_json(|| format!("{} of {task}/{channel}", O::WHAT), v.value())?;
            offsets.insert((task.to_owned(), channel.to_owned()), offset);
        }
        Ok(Self(offsets))
    }

    pub fn get(&self, task: &str, channel: &str) -> Option<O> {
        self.0.get(&(task.to_owned(), channel.to_owned())).copied()
    }

    /// The task's offsets, by channel name.
    pub fn of_task(&self, task: &str) -> Vec<(String, O)> {
        let mut out: Vec<_> = self
            .0
            .iter()
            .filter(|((t, _), _)| t == task)
            .map(|((_, channel), offset)| (channel.clone(), *offset))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn set(&mut self, task: &str, channel: &str, offset: O) {
        self.0.insert((task.to_owned(), channel.to_owned()), offset);
    }

    pub fn forget_task(&mut self, task: &str) {
        self.0.retain(|(t, _), _| t != task);
    }
}
