//! Verify: is the target the source's copy? Compares, for every collection of a task's scope,
//! the source's rows with the target's, through both public APIs, and writes nothing.
//!
//! Both sides are read in primary-key order by [`RowReader`], and two key-sorted runs of rows
//! compared by [`diff`] (`milvus_client`).
//!
//! How: per partition, the server's `count(*)` on both sides; then the rows, streamed one key
//! range at a time: a page of the source's lowest keys after the last range, and the target's
//! rows of the same range. Equal ranges (the common case) are settled in one comparison; a range
//! that differs is merged key by key into missing, extra and different keys. Memory holds one
//! range of each side and the keys found so far, whatever the size of the collection. (Milvus
//! cannot hash a key range on the server, so every row crosses the wire once either way; the
//! comparison is one pass.)
//!
//! Rows still in flight are not losses: the first pass reads the source as of `checked_at`. A
//! key found different is read again on both sides once the task's consistency point (the
//! source time through which the target has everything) has passed the time of that pass, up to
//! [`RECHECKS`] times while writes go on; only keys that still differ are reported. If the
//! consistency point does not get there within [`Limits::settle`] (a paused or failing task),
//! the keys are reported as they are, and `consistent_through` says how far the target was.
//!
//! Invariants: both sides are read with strong consistency (everything written before a read is
//! seen); a reply that does not hold one value per row for every field is an error, never a
//! difference or an equality.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;
use utoipa::ToSchema;

use crate::milvus_client::{RangeDiff, ReadError, RowReader, Shape, diff};
use crate::model::{CollectionRef, PrimaryKey, now_ms, physical_ms};

/// How many times a key found different is read again before it is reported.
pub const RECHECKS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("reading the task's consistency point: {0}")]
    Progress(String),
}

/// How much one verify reads and reports.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Rows per page of a key range.
    pub page_rows: usize,
    /// Keys listed per kind of difference and collection (all are counted).
    pub first: usize,
    /// How long to wait for the task's consistency point before a re-check.
    pub settle: Duration,
    /// Keys per collection kept for re-checking; differences past it are reported unchecked.
    pub recheck_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            page_rows: 2000,
            first: 10,
            settle: Duration::from_secs(60),
            recheck_keys: 10_000,
        }
    }
}

/// One collection to compare: its names on both sides, its fields, its partitions.
#[derive(Debug, Clone)]
pub struct Subject {
    pub source: CollectionRef,
    pub target: CollectionRef,
    pub shape: Shape,
    pub partitions: Vec<String>,
}

/// A source time: the hybrid timestamp and its UTC time.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SourceTime {
    pub timestamp: u64,
    pub time: String,
}

impl SourceTime {
    pub fn of(timestamp: u64) -> Self {
        let at = UNIX_EPOCH + Duration::from_millis(physical_ms(timestamp));
        Self {
            timestamp,
            time: humantime::format_rfc3339_millis(at).to_string(),
        }
    }
}

/// What a verify found.
#[derive(Debug, Serialize, ToSchema)]
pub struct Report {
    /// No collection compared has a difference.
    pub equal: bool,
    /// Every collection in scope could be compared (see `not_compared`).
    pub complete: bool,
    /// When the source was first read.
    pub checked_at: SourceTime,
    /// The task's consistency point at the end: the target held the source's state as of it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistent_through: Option<SourceTime>,
    pub collections: Vec<CollectionReport>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CollectionReport {
    /// `database.collection` on the source.
    pub source: String,
    /// `database.collection` on the target.
    pub target: String,
    /// Why the collection could not be compared (say, it is not loaded, so Milvus cannot
    /// query it); nothing else is reported for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_compared: Option<String>,
    pub partitions: Vec<PartitionCount>,
    /// Source rows read and compared.
    pub rows_compared: u64,
    /// Keys on the source that the target does not have.
    pub missing: Keys,
    /// Keys on the target that the source does not have.
    pub extra: Keys,
    /// Keys on both sides with a different value.
    pub different: Keys,
}

impl CollectionReport {
    fn new(subject: &Subject) -> Self {
        let name = |c: &CollectionRef| format!("{}.{}", c.db_name, c.name);
        Self {
            source: name(&subject.source),
            target: name(&subject.target),
            not_compared: None,
            partitions: Vec::new(),
            rows_compared: 0,
            missing: Keys::default(),
            extra: Keys::default(),
            different: Keys::default(),
        }
    }

    pub fn equal(&self) -> bool {
        self.missing.count == 0 && self.extra.count == 0 && self.different.count == 0
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionCount {
    pub partition: String,
    pub source_rows: u64,
    pub target_rows: u64,
}

/// Keys of one kind of difference: how many, and the first of them.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Keys {
    pub count: u64,
    pub first: Vec<PrimaryKey>,
}

impl Keys {
    fn add(&mut self, key: PrimaryKey, first: usize) {
        self.count += 1;
        if self.first.len() < first {
            self.first.push(key);
        }
    }
}

/// Compares every subject. `consistent` reads the task's consistency point.
pub async fn verify(
    source: &RowReader,
    target: &RowReader,
    subjects: &[Subject],
    limits: &Limits,
    consistent: &(dyn Fn() -> Result<Option<u64>, String> + Sync),
) -> Result<Report, VerifyError> {
    let checked_at = now_ms() << 18;
    let mut collections = Vec::new();
    for subject in subjects {
        let report = match compare(source, target, subject, limits, consistent).await {
            Ok(report) => report,
            Err(VerifyError::Read(ReadError { role, reason, .. })) => {
                let mut report = CollectionReport::new(subject);
                report.not_compared = Some(format!("the {role} cannot be read: {reason}"));
                report
            }
            Err(err) => return Err(err),
        };
        tracing::info!(
            collection = %report.source, rows = report.rows_compared,
            missing = report.missing.count, extra = report.extra.count,
            different = report.different.count, not_compared = ?report.not_compared, "verified"
        );
        collections.push(report);
    }
    Ok(Report {
        equal: collections.iter().all(CollectionReport::equal),
        complete: collections.iter().all(|c| c.not_compared.is_none()),
        checked_at: SourceTime::of(checked_at),
        consistent_through: consistent()
            .map_err(VerifyError::Progress)?
            .map(SourceTime::of),
        collections,
    })
}

/// Keys found different, per partition, to be read again.
type Suspects = BTreeMap<String, RangeDiff>;

async fn compare(
    source: &RowReader,
    target: &RowReader,
    subject: &Subject,
    limits: &Limits,
    consistent: &(dyn Fn() -> Result<Option<u64>, String> + Sync),
) -> Result<CollectionReport, VerifyError> {
    let mut report = CollectionReport::new(subject);
    let mut suspects = Suspects::new();
    let mut kept = 0usize;
    for partition in &subject.partitions {
        report.partitions.push(PartitionCount {
            partition: partition.clone(),
            source_rows: source.count(&subject.source, partition).await?,
            target_rows: target.count(&subject.target, partition).await?,
        });
        let mut on_range = |found: RangeDiff, report: &mut CollectionReport| {
            let held = suspects.entry(partition.clone()).or_default();
            let kinds = [
                (found.missing, &mut held.missing, &mut report.missing),
                (found.extra, &mut held.extra, &mut report.extra),
                (found.different, &mut held.different, &mut report.different),
            ];
            for (keys, held, reported) in kinds {
                for key in keys {
                    if kept < limits.recheck_keys {
                        kept += 1;
                        held.push(key);
                    } else {
                        reported.add(key, limits.first);
                    }
                }
            }
        };
        scan(
            source,
            target,
            subject,
            partition,
            limits,
            &mut report,
            &mut on_range,
        )
        .await?;
    }
    for _ in 0..RECHECKS {
        suspects.retain(|_, found| !found.is_empty());
        if suspects.is_empty() {
            break;
        }
        settle(consistent, limits.settle).await?;
        for (partition, found) in suspects.iter_mut() {
            let mut keys: Vec<PrimaryKey> = [&found.missing, &found.extra, &found.different]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            keys.sort();
            let mut again = RangeDiff::default();
            for chunk in keys.chunks(500) {
                let s = source
                    .rows_of(&subject.source, partition, &subject.shape, chunk)
                    .await?;
                let t = target
                    .rows_of(&subject.target, partition, &subject.shape, chunk)
                    .await?;
                let found = diff(&s, &t);
                again.missing.extend(found.missing);
                again.extra.extend(found.extra);
                again.different.extend(found.different);
            }
            *found = again;
        }
    }
    for found in suspects.into_values() {
        for key in found.missing {
            report.missing.add(key, limits.first);
        }
        for key in found.extra {
            report.extra.add(key, limits.first);
        }
        for key in found.different {
            report.different.add(key, limits.first);
        }
    }
    Ok(report)
}

/// Streams one partition's key ranges from both sides, handing each range's differences on.
async fn scan(
    source: &RowReader,
    target: &RowReader,
    subject: &Subject,
    partition: &str,
    limits: &Limits,
    report: &mut CollectionReport,
    on_range: &mut impl FnMut(RangeDiff, &mut CollectionReport),
) -> Result<(), VerifyError> {
    let (s, t, shape) = (&subject.source, &subject.target, &subject.shape);
    let mut after: Option<PrimaryKey> = None;
    loop {
        let page = source
            .page(s, partition, shape, after.as_ref(), None, limits.page_rows)
            .await?;
        // Past the source's last key, whatever the target still has is extra.
        let through = page.last().map(|row| row.key.clone());
        let mut theirs = Vec::new();
        let mut their_after = after.clone();
        loop {
            let more = target
                .page(
                    t,
                    partition,
                    shape,
                    their_after.as_ref(),
                    through.as_ref(),
                    limits.page_rows,
                )
                .await?;
            let Some(last) = more.last() else { break };
            their_after = Some(last.key.clone());
            theirs.extend(more);
            if through.is_none() && theirs.len() >= limits.page_rows {
                // Only extras are left: hand them on a page at a time.
                on_range(diff(&[], &std::mem::take(&mut theirs)), report);
            }
        }
        report.rows_compared += page.len() as u64;
        on_range(diff(&page, &theirs), report);
        match through {
            Some(key) => after = Some(key),
            None => return Ok(()),
        }
    }
}

/// Waits, up to `limit`, until the task's consistency point has passed now.
async fn settle(
    consistent: &(dyn Fn() -> Result<Option<u64>, String> + Sync),
    limit: Duration,
) -> Result<(), VerifyError> {
    let since = now_ms() << 18;
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if consistent()
            .map_err(VerifyError::Progress)?
            .is_some_and(|ts| ts >= since)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
