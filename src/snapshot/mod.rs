//! Snapshot: the rows of the collections that existed when a task started (`start_position:
//! "snapshot"`), copied from the source's API to the target, while the task's readers already
//! stage every change made since its start positions.
//!
//! What it owns: each collection's copy progress in the journal ([`CopyProgress`]) and the
//! insert calls of the copy. The applier reads that progress and nothing else of it.
//!
//! How: per partition, pages of the source's rows in key order, each inserted into the target
//! collection that the task's seeds created. A page is a span of keys whose end a query of the
//! keys alone finds (cheap next to the rows), so two spans are read side by side, and two
//! pages are sent side by side, while the next span's end is found: the source's reads and the
//! target's writes overlap. Every read is as of a source time past the task's start, so
//! everything written before it is seen.
//!
//! Invariants:
//! - While a collection is being copied, the applier holds its changes (all but the seeds at
//!   timestamp 0 that create it): a change applied before the copy could be overwritten by an
//!   older copied row (`apply::order`).
//! - Once it is copied, its held changes up to `replay_through` (past the source time of
//!   every read of the copy) are applied as replays: an insert the copy already carried
//!   becomes an upsert, so no row is doubled; later changes go as usual. Each key ends as its
//!   last change made it, or as copied when it had none since the start.
//! - Its changes stamped at or before the copy's `start_ts` are in the copy and never sent
//!   (`apply::calls::next_step`): the journal may hold a part of such a change alone.
//!
//! - A collection copied again because a bulk insert brought rows without a message
//!   ([`crate::model::Recopy`], see `task::imports`) goes the same way on a target that has
//!   its rows already: every page is an upsert, and the copy begins once no batch the applier
//!   had in flight holds a change of it and the source's queries see the imported segments.
//!
//! Crash behaviour: before a page is sent its collection's progress is marked in doubt through
//! the page's last key, and moved past the pages the target acknowledged (in order), in one
//! journal transaction checked against the task's run. A crash before the mark sends the page
//! later, once; after it, every page from the progress through the last key marked is read
//! again and sent as an upsert, whether the target got some of it or none. No page is skipped
//! and no row doubled.

mod read;
mod repair;
mod send;

use read::{Read, Reading};
use send::{Acknowledged, Destination, Doubt, InFlight, PAGES_IN_FLIGHT};

pub use repair::SavedRows;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::TryFutureExt;
use futures::stream::TryStreamExt;
use tokio::runtime::Handle;
use tracing::info;

use crate::journal::{Journal, JournalError, TaskRun};
use crate::milvus_client::{ReadError, RowReader, Seen, Shape};
use crate::model::{CopyProgress, CopyState, PrimaryKey, now_ms};

/// How far past the end of a copy its collection's changes are applied as replays: the
/// source's clock, which stamps the copy's reads, may run ahead of the appliance's.
pub const REPLAY_MARGIN_MS: u64 = 60_000;

/// How long a copy waits for its target collection before it says so in the task (and waits
/// on, with backoff).
const TARGET_COLLECTION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("copying into {collection} on the target: {reason}")]
    Write { collection: String, reason: String },
    #[error("waiting for the target to have collection {0}")]
    NoTargetCollection(String),
}

/// What a copy carries from one page to the next.
struct Pages {
    shape: Shape,
    /// What every read of the copy sees of the source.
    seen: Seen,
    /// A repair's saved rows of the partition being copied (its index).
    saved: Option<(usize, repair::Saved)>,
}

/// Copies one task's collections.
pub struct Copier<'a> {
    pub run: TaskRun,
    pub journal: &'a Journal,
    pub source: RowReader,
    /// The target, read for its collections and written through its client.
    pub target: RowReader,
    pub runtime: Handle,
    pub stop: Arc<AtomicBool>,
    /// Where a repair saves the target's rows it replaces or deletes.
    pub repair_dir: PathBuf,
}

impl Copier<'_> {
    /// Copies every collection not copied yet, from where its progress says; returns once all
    /// are copied or the task stops.
    pub fn copy_all(&self) -> Result<(), CopyError> {
        for mut copy in self.journal.copies(self.run.task())? {
            if !copy.is_done() {
                self.runtime.block_on(self.copy(&mut copy))?;
            }
        }
        Ok(())
    }

    /// Copies one collection, partition by partition, from where its progress says; returns
    /// once it is copied or the task stops.
    async fn copy(&self, copy: &mut CopyProgress) -> Result<(), CopyError> {
        self.wait_for_target(copy).await?;
        if copy.began_ms == 0 && !self.begin(copy).await? {
            return Ok(());
        }
        let mut pages = Pages {
            shape: Shape {
                primary_key: copy.primary_key.clone(),
                fields: copy.fields.clone(),
            },
            seen: self.reads_through(copy)?,
            saved: None,
        };
        let mut doubt = Doubt::of(&copy.state);
        while !self.stop.load(Ordering::Relaxed) {
            let CopyState::Copying { partition, .. } = copy.state else {
                return Ok(());
            };
            if partition >= copy.partitions.len() {
                return self.finish(copy);
            }
            self.copy_partition(copy, &mut doubt, &mut pages).await?;
            doubt = Doubt::None;
        }
        Ok(())
    }

    /// Waits for the target collection: the task's applier creates it first, from the seeds,
    /// usually a moment before.
    async fn wait_for_target(&self, copy: &CopyProgress) -> Result<(), CopyError> {
        let waited = std::time::Instant::now();
        while !self.target.has_collection(&copy.target).await? {
            if self.stop.load(Ordering::Relaxed) || waited.elapsed() > TARGET_COLLECTION_WAIT {
                return Err(CopyError::NoTargetCollection(copy.target.name.clone()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Records the copy's beginning and the rows the source has; a copy again after a bulk
    /// insert first waits for the applier and the imported segments. False when the task
    /// stopped meanwhile.
    async fn begin(&self, copy: &mut CopyProgress) -> Result<bool, CopyError> {
        if let Some(recopy) = &copy.recopy {
            self.wait_for_applier(copy.source.id).await?;
            // The imported rows are queried once the source has loaded their segments.
            while !self
                .source
                .segments_visible(&copy.source, &recopy.segments)
                .await?
            {
                if self.stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        for partition in &copy.partitions {
            copy.source_rows += self.source.count(&copy.source, partition).await?;
        }
        copy.began_ms = now_ms();
        self.journal.put_copy(&self.run, copy)?;
        info!(task = self.run.task(), collection = %copy.source.name, rows = copy.source_rows,
            "snapshot copy begins");
        Ok(true)
    }

    /// The source time every read of the copy sees through.
    fn reads_through(&self, copy: &CopyProgress) -> Result<Seen, CopyError> {
        // Every row written before the task's start is read: every tick its readers staged is
        // a source timestamp after the start, and so is the source's own `start_ts` (the
        // appliance's clock, when the copy began, stands in for a copy recorded without it).
        // What is written later may be read or not; its change is replayed after the copy
        // anyway. (A query that must see everything written before it waits for the source's
        // next tick, half a second a page.)
        let staged = self.journal.ticks(self.run.task())?.into_values().max();
        Ok(Seen::Through(
            staged
                .unwrap_or(0)
                .max(copy.began_ms << 18)
                .max(copy.start_ts),
        ))
    }

    /// Records the copy done, its changes up to past its end to be applied as replays.
    fn finish(&self, copy: &mut CopyProgress) -> Result<(), CopyError> {
        copy.ended_ms = now_ms();
        copy.state = CopyState::Done {
            replay_through: (copy.ended_ms + REPLAY_MARGIN_MS) << 18,
        };
        self.journal.put_copy(&self.run, copy)?;
        info!(task = self.run.task(), collection = %copy.source.name,
            rows = copy.rows_copied, "snapshot copy done");
        Ok(())
    }

    /// Copies the partition the progress is in, from where it says: its pages are read side by
    /// side ([`Reading::pages`]) and each is sent once read, in key order, [`PAGES_IN_FLIGHT`]
    /// at most at a time (one in a repair). Before a page is sent, the progress is moved past
    /// the pages the target acknowledged (in order) and marks every page sent in doubt, in one
    /// commit. Returns once the progress is past the partition, or the task stops.
    async fn copy_partition(
        &self,
        copy: &mut CopyProgress,
        doubt: &mut Doubt,
        pages: &mut Pages,
    ) -> Result<(), CopyError> {
        let CopyState::Copying {
            partition, after, ..
        } = copy.state.clone()
        else {
            return Ok(());
        };
        let name = copy.partitions[partition].clone();
        let to = Destination {
            collection: copy.target.clone(),
            dynamic_field: copy.dynamic_field.clone(),
            partition_key: copy.partition_key,
        };
        let most_in_flight = if copy.repair { 1 } else { PAGES_IN_FLIGHT };
        // A collection copied again (a bulk insert), or repaired, has rows on the target.
        let always_upsert = copy.recopy.is_some() || copy.repair;
        let reading = Reading {
            source: copy.source.clone(),
            partition: name.clone(),
            shape: pages.shape.clone(),
            seen: pages.seen,
            page_rows: copy.page_rows,
        };
        let mut reads = std::pin::pin!(reading.pages(self, after.clone()));
        let mut read_through = after.clone();
        let mut in_flight = InFlight::after(after);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                in_flight.drain().await?;
                return self.mark(copy, partition, &mut in_flight.acknowledged, doubt, None);
            }
            let read = in_flight.meanwhile(reads.try_next()).await?;
            let Some(Read::Range {
                after,
                through,
                columns,
                rows,
            }) = read
            else {
                in_flight.drain().await?;
                if let Some(Read::CollectionDropped) = read {
                    info!(task = self.run.task(), collection = %copy.source.name,
                        "snapshot copy ends: the collection was dropped on the source");
                    return self.begin_partition(copy, usize::MAX, in_flight.acknowledged);
                }
                if copy.repair {
                    // Past the source's last key: what the target has there goes.
                    let saved = self.saved(copy, partition, pages)?;
                    self.repair_range(copy, &name, &[], read_through.as_ref(), None, saved)
                        .await?;
                }
                return self.begin_partition(copy, partition + 1, in_flight.acknowledged);
            };
            in_flight.make_room(most_in_flight).await?;
            let upsert = doubt.covers(after.as_ref()) || always_upsert;
            self.mark(
                copy,
                partition,
                &mut in_flight.acknowledged,
                doubt,
                Some(&through),
            )?;
            crate::failpoint::hit("snapshot-after-mark");
            if copy.repair {
                let saved = self.saved(copy, partition, pages)?;
                self.repair_range(copy, &name, &columns, after.as_ref(), Some(&through), saved)
                    .await?;
            }
            let page = self.send(&to, &name, columns, rows, upsert);
            in_flight.push(page.map_ok({
                let through = through.clone();
                move |()| (rows, through)
            }));
            read_through = Some(through);
            // Tests slow the copy down to act while it runs.
            tokio::time::sleep(crate::failpoint::delay("snapshot-page")).await;
        }
    }

    /// Commits the progress of `partition`: past the pages acknowledged, and in doubt through
    /// `last` (the newest page sent) or as far as it already was.
    fn mark(
        &self,
        copy: &mut CopyProgress,
        partition: usize,
        acknowledged: &mut Acknowledged,
        doubt: &Doubt,
        last: Option<&PrimaryKey>,
    ) -> Result<(), CopyError> {
        let before = copy.state.clone();
        let CopyState::Copying {
            in_doubt,
            doubt_through,
            ..
        } = &before
        else {
            return Ok(());
        };
        let doubt_through = last
            .map(|last| doubt.through(last))
            .or(doubt_through.clone());
        copy.rows_copied += std::mem::take(&mut acknowledged.rows);
        copy.state = CopyState::Copying {
            partition,
            after: acknowledged.after.clone(),
            in_doubt: *in_doubt || doubt_through.is_some(),
            doubt_through,
        };
        if copy.state != before {
            self.journal.put_copy(&self.run, copy)?;
        }
        Ok(())
    }

    /// Commits the progress at the beginning of partition `partition`, every page before it
    /// acknowledged.
    fn begin_partition(
        &self,
        copy: &mut CopyProgress,
        partition: usize,
        acknowledged: Acknowledged,
    ) -> Result<(), CopyError> {
        copy.rows_copied += acknowledged.rows;
        copy.state = CopyState::Copying {
            partition: partition.min(copy.partitions.len()),
            after: None,
            in_doubt: false,
            doubt_through: None,
        };
        self.journal.put_copy(&self.run, copy)?;
        Ok(())
    }

    /// The saved rows of the repair of `copy`'s partition `partition`, read back at its first
    /// page.
    fn saved<'p>(
        &self,
        copy: &CopyProgress,
        partition: usize,
        pages: &'p mut Pages,
    ) -> Result<&'p mut repair::Saved, CopyError> {
        let current = pages.saved.take().filter(|(p, _)| *p == partition);
        let entry = match current {
            Some(entry) => entry,
            None => {
                let saved =
                    repair::Saved::open(&self.repair_dir, copy, partition).map_err(|reason| {
                        CopyError::Write {
                            collection: copy.target.name.clone(),
                            reason,
                        }
                    })?;
                (partition, saved)
            }
        };
        Ok(&mut pages.saved.insert(entry).1)
    }

    /// Waits until no batch the applier has in flight holds a change of collection `id`: one
    /// made before the copy was recorded (when the applier still applied the collection's
    /// changes) could land a plain insert on a row the copy has upserted, doubling it. Batches
    /// made since hold none. Asked twice in a row, as a batch is made just before it is marked.
    async fn wait_for_applier(&self, id: i64) -> Result<(), CopyError> {
        let mut clear_in_a_row = 0;
        while clear_in_a_row < 2 && !self.stop.load(Ordering::Relaxed) {
            let holds = self.journal.in_flight(self.run.task())?.is_some_and(|b| {
                b.ends
                    .iter()
                    .any(|(v, _)| crate::model::vchannel_collection_id(v) == Some(id))
            });
            clear_in_a_row = if holds { 0 } else { clear_in_a_row + 1 };
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }
}
