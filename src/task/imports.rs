//! Bulk inserts on the source: Milvus 2.3 writes an import's rows into segments of their own,
//! with no message on any topic, so the readers never see them. A task finds them here and
//! copies the collection again.
//!
//! Design:
//! - Detect: the source records each import in its etcd (`{root}/meta/importtask/{id}`, an
//!   `ImportTaskInfo` whose state becomes `ImportCompleted`). A thread of each running task
//!   reads them every [`SCAN_EVERY`]; an import completed that the journal has not seen starts
//!   a copy of its collection (when the task's scope holds it).
//! - Bring the rows: the copy is the snapshot machinery's (`crate::snapshot`), run again on a
//!   collection the target already has ([`Recopy`]): while it runs the applier holds the
//!   collection's changes; every page goes as an upsert (the target has the rows from before);
//!   once done, the held changes are replayed, inserts as upserts. Each key ends as its last
//!   change made it, or as the copy read it: the imported rows arrive, and rows inserted or
//!   deleted around the import end as on the source. A batch the applier had in flight when
//!   the copy began is acknowledged before the copy's first page (`Copier::copy`), so no plain
//!   insert of the collection lands on a copied row.
//! - Consistency point (`journal::lag`): held below the copy's `holds_from` (the import's
//!   creation, or the scan before the one that saw it, whichever is earlier) until the copy is
//!   done, and never past the last scan's `checked_ts` (an import completed since may not be
//!   seen yet). The task shows the copy and its cause in its snapshot list.
//!
//! Crash behaviour: the imports seen and the copies they start are one journal transaction
//! (`Journal::put_imports_seen`), checked against the task's run: a crash before it sees the
//! imports again, after it they start nothing more. A task records the imports completed when
//! it is created as seen (a task created before this existed: when it first scans), so only
//! imports completed since start a copy. The set kept is the completed imports the source still
//! lists: as many as the source keeps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message;
use tracing::{info, info_span, warn};

use super::runner::Pause;
use super::{Supervisor, TaskSpec, snapshot};
use crate::journal::{ImportsSeen, Journal, JournalError, TaskRun, lag::AT_END_MARGIN_MS};
use crate::milvus_client::RowReader;
use crate::model::{CopyProgress, Recopy, Scope, now_ms};
use crate::proto::etcd_meta::ImportTaskInfo;
use crate::source::meta::{MetaError, SourceMeta};

/// How often a running task reads the source's imports.
pub const SCAN_EVERY: Duration = Duration::from_secs(1);
/// Where Milvus 2.3 records its imports, under its meta root.
const IMPORT_TASKS: &str = "importtask/";
/// `milvus.proto.common.ImportState::ImportCompleted`.
const IMPORT_COMPLETED: i32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the source's import record {key} does not decode: {reason}")]
    BadRecord { key: String, reason: String },
}

/// One import as the source records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub id: i64,
    pub collection_id: i64,
    /// When it was created, Unix ms.
    pub created_ms: u64,
    pub rows: i64,
    pub completed: bool,
    pub segments: Vec<i64>,
}

/// Decodes the source's record of one import.
pub fn decode(key: &str, value: &[u8]) -> Result<Import, ImportError> {
    let info = ImportTaskInfo::decode(value).map_err(|e| ImportError::BadRecord {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    let state = info.state.unwrap_or_default();
    Ok(Import {
        id: info.id,
        collection_id: info.collection_id,
        created_ms: u64::try_from(info.create_ts).unwrap_or(0) * 1000,
        rows: state.row_count,
        completed: state.state_code == IMPORT_COMPLETED,
        segments: state.segments,
    })
}

/// The imports of `now` completed and not seen before, and what is seen after this scan: the
/// completed imports the source still lists, checked through `checked_ts`.
pub fn newly_completed(
    before: &ImportsSeen,
    now: &[Import],
    checked_ts: u64,
) -> (ImportsSeen, Vec<Import>) {
    let completed = now.iter().filter(|i| i.completed);
    let new = completed
        .clone()
        .filter(|i| !before.completed.contains(&i.id))
        .cloned()
        .collect();
    let seen = ImportsSeen {
        completed: completed.map(|i| i.id).collect(),
        checked_ts,
    };
    (seen, new)
}

/// The copy that brings `import`'s rows: `fresh` (the collection as it is now) marked as a
/// re-copy. It keeps the `start_ts` of the collection's earlier copy (`existing`), whose
/// changes at or before it are in the target already, and the earlier hold of a re-copy
/// not done yet.
pub fn recopy(
    fresh: CopyProgress,
    existing: Option<&CopyProgress>,
    import: &Import,
    holds_from: u64,
) -> CopyProgress {
    let running = existing
        .filter(|e| !e.is_done())
        .and_then(|e| e.recopy.as_ref());
    let held = running.map_or(holds_from, |r| r.holds_from.min(holds_from));
    let mut segments = running.map_or(Vec::new(), |r| r.segments.clone());
    segments.extend(&import.segments);
    CopyProgress {
        start_ts: existing.map_or(0, |e| e.start_ts),
        recopy: Some(Recopy {
            cause: format!(
                "bulk insert {} of {} rows completed on the source",
                import.id, import.rows
            ),
            holds_from: held,
            segments,
        }),
        ..fresh
    }
}

/// A source timestamp before now: the source's clock when its API answers, else the
/// appliance's less the margin by which the source's may run ahead.
async fn checked_now(api: Option<&RowReader>) -> u64 {
    if let Some(Ok(ts)) = match api {
        Some(api) => Some(api.timestamp().await),
        None => None,
    } {
        return ts;
    }
    now_ms().saturating_sub(AT_END_MARGIN_MS) << 18
}

/// The source's imports at etcd revision `revision` (0: now).
async fn imports(meta: &SourceMeta, revision: i64) -> Result<Vec<Import>, ImportError> {
    meta.values_under(IMPORT_TASKS, revision)
        .await?
        .iter()
        .map(|(key, value)| decode(key, value))
        .collect()
}

/// The imports completed at etcd revision `revision` (a task's start), all seen: they start
/// no copy. Checked through the appliance's clock now, less the margin.
pub(super) async fn seen_at(meta: &SourceMeta, revision: i64) -> Result<ImportsSeen, ImportError> {
    let checked_ts = checked_now(None).await;
    let then = imports(meta, revision).await?;
    Ok(newly_completed(&ImportsSeen::default(), &then, checked_ts).0)
}

impl From<ImportError> for super::TaskError {
    fn from(err: ImportError) -> Self {
        match err {
            ImportError::Meta(e) => Self::Meta(e),
            ImportError::Journal(e) => Self::Journal(e),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// One scan: the imports completed since the last, and the copies they start, recorded in one
/// journal transaction.
async fn scan(
    journal: &Journal,
    run: &TaskRun,
    meta: &SourceMeta,
    api: Option<&RowReader>,
    scope: &Scope,
) -> Result<(), ImportError> {
    let checked_ts = checked_now(api).await;
    let now = imports(meta, 0).await?;
    let Some(before) = journal.imports_seen(run.task())? else {
        // A task created before imports were looked for: from now on.
        let (seen, _) = newly_completed(&ImportsSeen::default(), &now, checked_ts);
        return Ok(journal.put_imports_seen(run, &seen, &[])?);
    };
    let (seen, new) = newly_completed(&before, &now, checked_ts);
    let existing: BTreeMap<i64, CopyProgress> = journal
        .copies(run.task())?
        .into_iter()
        .map(|c| (c.source.id, c))
        .collect();
    let mut copies: BTreeMap<i64, CopyProgress> = BTreeMap::new();
    for import in &new {
        let Some(c) = meta.collection(import.collection_id).await? else {
            continue; // dropped since: nothing to copy
        };
        if !scope.contains(&c.db_name, &c.name) {
            continue;
        }
        let holds_from = before.checked_ts.min(import.created_ms << 18);
        let earlier = copies.get(&c.id).or_else(|| existing.get(&c.id));
        let copy = recopy(snapshot::new_copy(scope, &c), earlier, import, holds_from);
        info!(task = run.task(), collection = %c.name, import = import.id, rows = import.rows,
            "bulk insert completed on the source: copying the collection again");
        copies.insert(c.id, copy);
    }
    let copies: Vec<CopyProgress> = copies.into_values().collect();
    Ok(journal.put_imports_seen(run, &seen, &copies)?)
}

impl Supervisor {
    /// Scans the source's imports every [`SCAN_EVERY`] until the task stops; a failed scan is
    /// shown in the task and retried.
    pub(super) fn run_import_watcher(
        self: Arc<Self>,
        spec: TaskSpec,
        run: TaskRun,
        stop: Arc<AtomicBool>,
    ) {
        let _span = info_span!("imports", task = %spec.task_id).entered();
        let health = self.health(&spec.task_id);
        let scope = spec.scope();
        let source = match self.source_of(&spec) {
            Ok(source) => source,
            Err(err) => return self.fail(&run, err.to_string()),
        };
        let api = self.source_rows(&spec).ok();
        let mut pause = Pause::default();
        let mut meta: Option<SourceMeta> = None;
        while !stop.load(Ordering::Relaxed) {
            let scanned = self.runtime.block_on(async {
                if meta.is_none() {
                    meta = Some(source.meta().await?);
                }
                match &meta {
                    Some(m) => scan(&self.journal, &run, m, api.as_ref(), &scope).await,
                    None => Ok(()),
                }
            });
            match scanned {
                Ok(()) => {
                    health.resolved("imports");
                    pause = Pause::default();
                    wait(&stop, SCAN_EVERY);
                }
                Err(ImportError::Journal(err @ JournalError::StaleRun { .. })) => {
                    return warn!(%err, "import watcher of an earlier run stopped");
                }
                Err(err) => {
                    warn!(%err, "reading the source's bulk inserts failed; retrying");
                    health.problem("imports", format!("bulk inserts: {err}"));
                    meta = None;
                    pause.wait(&stop);
                }
            }
        }
    }
}

/// Sleeps `how_long` in short slices, so a stop is not held up.
pub(super) fn wait(stop: &AtomicBool, how_long: Duration) {
    let until = std::time::Instant::now() + how_long;
    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CollectionRef, CopyState};
    use crate::proto::etcd_meta::ImportTaskState;

    fn import(id: i64, completed: bool) -> Import {
        Import {
            id,
            collection_id: 7,
            created_ms: 1_000,
            rows: 500,
            completed,
            segments: vec![id * 10],
        }
    }

    fn copy(state: CopyState, start_ts: u64, recopy: Option<Recopy>) -> CopyProgress {
        let c = CollectionRef {
            id: 7,
            db_name: "default".into(),
            name: "c".into(),
        };
        CopyProgress {
            start_ts,
            recopy,
            ..CopyProgress::of_test_collection(c, state)
        }
    }

    #[test]
    fn the_sources_import_record_decodes_to_its_collection_and_state() {
        let value = ImportTaskInfo {
            id: 41,
            collection_id: 7,
            create_ts: 1_700_000_000,
            state: Some(ImportTaskState {
                state_code: IMPORT_COMPLETED,
                segments: vec![9, 10],
                row_count: 500,
            }),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            decode("k", &value).unwrap(),
            Import {
                id: 41,
                collection_id: 7,
                created_ms: 1_700_000_000_000,
                rows: 500,
                completed: true,
                segments: vec![9, 10],
            }
        );
        let err = decode("by-dev/meta/importtask/41", &[0xff]).unwrap_err();
        assert!(err.to_string().contains("importtask/41"), "{err}");
    }

    #[test]
    fn only_an_import_completed_since_the_last_scan_is_new_and_the_set_follows_the_source() {
        let before = ImportsSeen {
            completed: [1, 2].into(),
            checked_ts: 10,
        };
        // 1 is gone from the source, 2 seen already, 3 still running, 4 newly completed.
        let now = [import(2, true), import(3, false), import(4, true)];
        let (seen, new) = newly_completed(&before, &now, 20);
        assert_eq!(new, [import(4, true)]);
        assert_eq!(
            seen,
            ImportsSeen {
                completed: [2, 4].into(),
                checked_ts: 20
            }
        );
        let (_, again) = newly_completed(&seen, &now, 30);
        assert!(again.is_empty(), "seen once, copied once");
    }

    #[test]
    fn a_recopy_keeps_the_earlier_copys_start_and_the_earliest_hold() {
        let fresh = copy(CopyState::beginning(), 0, None);
        let done = copy(CopyState::Done { replay_through: 9 }, 5, None);
        let made = recopy(fresh.clone(), Some(&done), &import(4, true), 100);
        assert_eq!(made.start_ts, 5);
        assert_eq!(made.recopy.as_ref().unwrap().holds_from, 100);
        assert!(!made.is_done());
        assert!(
            made.recopy
                .unwrap()
                .cause
                .contains("bulk insert 4 of 500 rows")
        );
        // A second import while the first one's copy runs: the copy starts over, held from the
        // first.
        let running = recopy(fresh.clone(), Some(&done), &import(4, true), 100);
        let again = recopy(fresh, Some(&running), &import(6, true), 300).recopy;
        assert_eq!(again.as_ref().unwrap().holds_from, 100);
        assert_eq!(
            again.unwrap().segments,
            [40, 60],
            "the copy waits for both imports' rows"
        );
    }
}
