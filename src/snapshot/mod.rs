//! Snapshot: the rows of the collections that existed when a task started (`start_position:
//! "snapshot"`), copied from the source's API to the target, while the task's readers already
//! stage every change made since its start positions.
//!
//! What it owns: each collection's copy progress in the journal ([`CopyProgress`]) and the
//! insert calls of the copy. The applier reads that progress and nothing else of it.
//!
//! How: per partition, pages of the source's rows in key order (a query after the last key
//! copied, as of a source time past the task's start, so everything written before it is
//! seen), each inserted into the target collection that the task's seeds created.
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
//! Crash behaviour: before a page is sent its collection's progress is marked in doubt, and
//! after the target acknowledged it the progress moves past it, each in one journal transaction
//! checked against the task's run (the move marks the next page in doubt in the same one). A
//! crash before the mark sends the page later, once; after it, the page is read again and
//! sent as an upsert, whether the target got some of it or none. No page is skipped and no row
//! doubled.

mod repair;

pub use repair::SavedRows;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::TryFutureExt;
use futures::stream::{FuturesOrdered, StreamExt, TryStreamExt};
use milvus::proto::milvus::{InsertRequest, UpsertRequest};
use milvus::proto::schema::FieldData;
use tokio::runtime::Handle;
use tracing::info;

use crate::journal::{Journal, JournalError, TaskRun};
use crate::milvus_client::{ReadError, RowReader, Seen, Shape, failure, keys};
use crate::model::{CollectionRef, CopyProgress, CopyState, PrimaryKey, now_ms};

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

/// Pages on their way to the target at once: the next page is read, and sent, while the ones
/// before it are still being sent, so the source's reads and the target's writes overlap.
const PAGES_IN_FLIGHT: usize = 2;

/// Pages read from the source at once. Each page is a range of keys whose end a query of the
/// keys alone finds first (cheap next to the rows), so the ranges are read side by side.
const READS_IN_FLIGHT: usize = 2;

/// A range of a partition's keys to read: after `after` (None: from the first), through
/// `through`.
enum Span {
    Keys {
        after: Option<PrimaryKey>,
        through: PrimaryKey,
    },
    /// The collection is gone from the source.
    CollectionDropped,
}

/// A span, read: one page, or more when a query answered only the first keys of it.
enum Read {
    Range {
        after: Option<PrimaryKey>,
        through: PrimaryKey,
        columns: Vec<FieldData>,
    },
    CollectionDropped,
}

/// What a failed read of the source found gone.
enum Gone {
    Collection,
    Partition,
}

/// What the target may have of the partition being copied, past the progress: rows of pages
/// sent before the copy stopped, which go again as upserts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Doubt {
    None,
    /// In the first page after the progress (copies recorded before pages went side by side).
    NextPage,
    /// In the pages that begin at or below this key.
    Through(PrimaryKey),
}

impl Doubt {
    fn of(state: &CopyState) -> Self {
        match state {
            CopyState::Copying {
                in_doubt: true,
                doubt_through: Some(key),
                ..
            } => Self::Through(key.clone()),
            CopyState::Copying { in_doubt: true, .. } => Self::NextPage,
            _ => Self::None,
        }
    }

    /// Whether the page after key `after` (None: the partition's first) may be on the target;
    /// asked of each page in turn.
    fn covers(&mut self, after: Option<&PrimaryKey>) -> bool {
        let covered = match &*self {
            Self::None => false,
            Self::NextPage => true,
            Self::Through(key) => after.is_none_or(|after| after < key),
        };
        if !covered || *self == Self::NextPage {
            *self = Self::None;
        }
        covered
    }

    /// The key through which the target may have rows once the pages through `last` are sent.
    fn through(&self, last: &PrimaryKey) -> PrimaryKey {
        match self {
            Self::Through(key) if key > last => key.clone(),
            _ => last.clone(),
        }
    }
}

/// Where a copy's pages go.
struct Destination {
    collection: CollectionRef,
    dynamic_field: Option<String>,
    partition_key: bool,
}

/// The pages of a partition the target acknowledged since the progress was last committed.
struct Acknowledged {
    /// The last key of the newest of them (pages are acknowledged in the order they were read,
    /// which is key order).
    after: Option<PrimaryKey>,
    rows: u64,
}

/// The pages of a partition on their way to the target, each answering its rows and last key.
struct InFlight<F: Future> {
    pages: FuturesOrdered<F>,
    acknowledged: Acknowledged,
}

impl<F: Future<Output = Result<(usize, PrimaryKey), CopyError>>> InFlight<F> {
    /// None yet, the progress after key `after`.
    fn after(after: Option<PrimaryKey>) -> Self {
        Self {
            pages: FuturesOrdered::new(),
            acknowledged: Acknowledged { after, rows: 0 },
        }
    }

    fn any(&self) -> bool {
        !self.pages.is_empty()
    }

    fn push(&mut self, page: F) {
        self.pages.push_back(page);
    }

    /// Waits for the oldest page to be acknowledged (at once when none is in flight).
    async fn next(&mut self) -> Result<(), CopyError> {
        if let Some(page) = self.pages.next().await {
            let (rows, last) = page?;
            self.acknowledged.rows += rows as u64;
            self.acknowledged.after = Some(last);
            crate::failpoint::hit("snapshot-after-send");
        }
        Ok(())
    }

    /// Runs `work` while the pages in flight are acknowledged.
    async fn meanwhile<T>(
        &mut self,
        work: impl Future<Output = Result<T, CopyError>>,
    ) -> Result<T, CopyError> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                acknowledged = self.next(), if self.any() => acknowledged?,
                done = &mut work => return done,
            }
        }
    }

    /// Waits until fewer than `most` pages are in flight.
    async fn make_room(&mut self, most: usize) -> Result<(), CopyError> {
        while self.pages.len() >= most {
            self.next().await?;
        }
        Ok(())
    }

    /// Waits until every page is acknowledged.
    async fn drain(&mut self) -> Result<(), CopyError> {
        self.make_room(1).await
    }
}

/// How a partition's pages are read.
struct Reading {
    source: CollectionRef,
    partition: String,
    shape: Shape,
    seen: Seen,
    page_rows: usize,
}

impl Reading {
    /// The partition's spans after key `after`, each ending where a query of the keys alone
    /// finds its `page_rows`th key.
    fn spans<'r>(
        &'r self,
        copier: &'r Copier<'_>,
        after: Option<PrimaryKey>,
    ) -> impl futures::Stream<Item = Result<Span, CopyError>> + 'r {
        let key_only = Shape {
            primary_key: self.shape.primary_key.clone(),
            fields: vec![self.shape.primary_key.clone()],
        };
        futures::stream::try_unfold(Some(after), move |from| {
            let key_only = key_only.clone();
            async move {
                let Some(after) = from else {
                    return Ok(None);
                };
                let read = copier
                    .source
                    .page_columns(
                        &self.source,
                        &self.partition,
                        &key_only,
                        after.as_ref(),
                        None,
                        self.page_rows,
                        self.seen,
                    )
                    .await;
                let columns = match read {
                    Ok(columns) => columns,
                    Err(err) => match copier.gone(&self.source, &self.partition, err).await? {
                        Gone::Collection => return Ok(Some((Span::CollectionDropped, None))),
                        Gone::Partition => return Ok(None),
                    },
                };
                Ok(self.last_key(&columns)?.map(|through| {
                    let span = Span::Keys {
                        after,
                        through: through.clone(),
                    };
                    (span, Some(Some(through)))
                }))
            }
        })
    }

    /// The rows of `span`. A query answers the first keys only when it cannot tell the rest
    /// are not better (a shard's answer ran out): the rest is read after them, a page each.
    async fn read(&self, copier: &Copier<'_>, span: Span) -> Result<Vec<Read>, CopyError> {
        let Span::Keys { after, through } = span else {
            return Ok(vec![Read::CollectionDropped]);
        };
        let mut pages: Vec<Read> = Vec::new();
        let mut from = after;
        loop {
            let read = copier
                .source
                .page_columns(
                    &self.source,
                    &self.partition,
                    &self.shape,
                    from.as_ref(),
                    Some(&through),
                    self.page_rows,
                    self.seen,
                )
                .await;
            let columns = match read {
                Ok(columns) => columns,
                Err(err) => match copier.gone(&self.source, &self.partition, err).await? {
                    Gone::Collection => return Ok(vec![Read::CollectionDropped]),
                    // The next span's end is not found: the partition ends here.
                    Gone::Partition => Vec::new(),
                },
            };
            let last = self.last_key(&columns)?;
            let page_through = last.clone().filter(|last| *last < through);
            let more = page_through.is_some();
            match (last, pages.last_mut()) {
                // Nothing after the pages read: the last of them reaches the span's end.
                (None, Some(Read::Range { through: end, .. })) => *end = through.clone(),
                _ => pages.push(Read::Range {
                    after: from,
                    through: page_through.clone().unwrap_or_else(|| through.clone()),
                    columns,
                }),
            }
            if !more {
                return Ok(pages);
            }
            from = page_through;
        }
    }

    /// The greatest key of a page (None when it has no rows).
    fn last_key(&self, columns: &[FieldData]) -> Result<Option<PrimaryKey>, CopyError> {
        Ok(columns
            .iter()
            .find(|c| c.field_name == self.shape.primary_key)
            .map(keys)
            .transpose()
            .map_err(|reason| self.unreadable(reason))?
            .and_then(|keys| keys.into_iter().max()))
    }

    fn unreadable(&self, reason: impl std::fmt::Display) -> CopyError {
        CopyError::Read(ReadError {
            role: "source",
            collection: self.source.name.clone(),
            reason: reason.to_string(),
        })
    }
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
    /// side ([`READS_IN_FLIGHT`]) and each is sent once read, in key order, [`PAGES_IN_FLIGHT`]
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
        let mut reads = std::pin::pin!(
            reading
                .spans(self, after.clone())
                .map_ok(|span| reading.read(self, span))
                .try_buffered(READS_IN_FLIGHT)
                .map_ok(|pages| futures::stream::iter(pages.into_iter().map(Ok)))
                .try_flatten()
        );
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
            let rows = page_keys(copy, &columns)?.len();
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

    /// What a failed read of partition `partition` of `source` found gone; the read's error
    /// when neither is.
    async fn gone(
        &self,
        source: &CollectionRef,
        partition: &str,
        err: ReadError,
    ) -> Result<Gone, CopyError> {
        // Dropped meanwhile: the drop is in the journal, after the changes held.
        match self.source.has(source, partition).await? {
            (false, _) => Ok(Gone::Collection),
            (true, false) => Ok(Gone::Partition),
            (true, true) => Err(err.into()),
        }
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

    /// Inserts one page into the target; as an upsert when the target may have some of it.
    async fn send(
        &self,
        to: &Destination,
        partition: &str,
        mut columns: Vec<FieldData>,
        rows: usize,
        upsert: bool,
    ) -> Result<(), CopyError> {
        // A span whose rows were all deleted before it was read.
        if rows == 0 {
            return Ok(());
        }
        for column in &mut columns {
            column.is_dynamic = to.dynamic_field.as_deref() == Some(&column.field_name);
            fill_empty_arrays(column);
        }
        // Milvus places the rows of a partition-key collection by the key itself.
        let partition_name = if to.partition_key {
            String::new()
        } else {
            partition.to_owned()
        };
        let (t, mut client) = (&to.collection, self.target.client.clone());
        let write_error = |reason: String| CopyError::Write {
            collection: t.name.clone(),
            reason,
        };
        let status = if upsert {
            let request = UpsertRequest {
                db_name: t.db_name.clone(),
                collection_name: t.name.clone(),
                partition_name,
                fields_data: columns,
                num_rows: rows as u32,
                ..Default::default()
            };
            client
                .upsert(request)
                .await
                .map_err(|e| write_error(format!("Upsert: {}", e.message())))?
                .into_inner()
                .status
        } else {
            let request = InsertRequest {
                db_name: t.db_name.clone(),
                collection_name: t.name.clone(),
                partition_name,
                fields_data: columns,
                num_rows: rows as u32,
                ..Default::default()
            };
            client
                .insert(request)
                .await
                .map_err(|e| write_error(format!("Insert: {}", e.message())))?
                .into_inner()
                .status
        };
        failure(status.as_ref()).map_or(Ok(()), |reason| Err(write_error(reason)))
    }
}

/// The keys of a page, from its primary key column (none in an empty page).
fn page_keys(copy: &CopyProgress, columns: &[FieldData]) -> Result<Vec<PrimaryKey>, CopyError> {
    Ok(columns
        .iter()
        .find(|c| c.field_name == copy.primary_key)
        .map(keys)
        .transpose()
        .map_err(|e| CopyError::Write {
            collection: copy.source.name.clone(),
            reason: e.to_string(),
        })?
        .unwrap_or_default())
}

/// Gives each empty array of an array column its element type's empty list. A query answers an
/// empty array as an element with no data at all, which Milvus 2.3's insert validation reads
/// through a nil pointer, crashing the target's proxy.
fn fill_empty_arrays(column: &mut FieldData) {
    use milvus::proto::schema::{
        BoolArray, DataType, DoubleArray, FloatArray, IntArray, LongArray, StringArray,
        field_data::Field, scalar_field::Data,
    };
    let Some(Field::Scalars(scalars)) = &mut column.field else {
        return;
    };
    let Some(Data::ArrayData(arrays)) = &mut scalars.data else {
        return;
    };
    let empty = match DataType::try_from(arrays.element_type) {
        Ok(DataType::Bool) => Data::BoolData(BoolArray::default()),
        Ok(DataType::Int8 | DataType::Int16 | DataType::Int32) => {
            Data::IntData(IntArray::default())
        }
        Ok(DataType::Int64) => Data::LongData(LongArray::default()),
        Ok(DataType::Float) => Data::FloatData(FloatArray::default()),
        Ok(DataType::Double) => Data::DoubleData(DoubleArray::default()),
        Ok(DataType::VarChar | DataType::String) => Data::StringData(StringArray::default()),
        _ => return,
    };
    for element in &mut arrays.data {
        if element.data.is_none() {
            element.data = Some(empty.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use milvus::proto::schema::{
        ArrayArray, DataType, LongArray, ScalarField, field_data::Field, scalar_field::Data,
    };

    use super::*;

    fn in_doubt(after: i64, through: Option<i64>) -> CopyState {
        CopyState::Copying {
            partition: 0,
            after: Some(PrimaryKey::Int(after)),
            in_doubt: true,
            doubt_through: through.map(PrimaryKey::Int),
        }
    }

    #[test]
    fn after_a_crash_every_page_that_begins_below_the_last_key_sent_goes_again_as_an_upsert() {
        // Pages (10, 20] and (20, 30] were in flight; the copy resumes after 10 with pages
        // that need not end where they did.
        let mut doubt = Doubt::of(&in_doubt(10, Some(30)));
        assert!(doubt.covers(Some(&PrimaryKey::Int(10))));
        assert!(doubt.covers(Some(&PrimaryKey::Int(25))));
        assert!(!doubt.covers(Some(&PrimaryKey::Int(30))));
        assert_eq!(doubt, Doubt::None);
        // Marking the next page keeps the doubt as far as it reached.
        let doubt = Doubt::of(&in_doubt(10, Some(30)));
        assert_eq!(doubt.through(&PrimaryKey::Int(20)), PrimaryKey::Int(30));
        assert_eq!(doubt.through(&PrimaryKey::Int(40)), PrimaryKey::Int(40));
    }

    #[test]
    fn a_copy_in_doubt_recorded_before_pages_went_side_by_side_sends_its_next_page_as_an_upsert() {
        let recorded: CopyState =
            serde_json::from_str(r#"{"Copying":{"partition":0,"after":10,"in_doubt":true}}"#)
                .unwrap();
        assert_eq!(recorded, in_doubt(10, None));
        let mut doubt = Doubt::of(&recorded);
        assert!(doubt.covers(Some(&PrimaryKey::Int(10))));
        assert!(!doubt.covers(Some(&PrimaryKey::Int(20))));
        assert!(!Doubt::of(&CopyState::beginning()).covers(None));
    }

    #[test]
    fn an_empty_array_is_sent_as_its_types_empty_list_not_as_no_data() {
        let element = |data: Option<Data>| ScalarField {
            data,
            ..Default::default()
        };
        let long = Data::LongData(LongArray { data: vec![7] });
        let mut column = FieldData {
            field_name: "ints".into(),
            field: Some(Field::Scalars(ScalarField {
                data: Some(Data::ArrayData(ArrayArray {
                    data: vec![element(None), element(Some(long.clone()))],
                    element_type: DataType::Int64 as i32,
                })),
                ..Default::default()
            })),
            ..Default::default()
        };
        fill_empty_arrays(&mut column);
        let Some(Field::Scalars(ScalarField {
            data: Some(Data::ArrayData(arrays)),
            ..
        })) = column.field
        else {
            panic!("not an array column");
        };
        assert_eq!(
            arrays.data,
            [
                element(Some(Data::LongData(LongArray::default()))),
                element(Some(long))
            ]
        );
    }
}
