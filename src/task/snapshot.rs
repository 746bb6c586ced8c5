//! A task started from a snapshot: the copies it records at create, and the thread that makes
//! them (see [`crate::snapshot`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use milvus::proto::schema::FieldSchema;
use serde::Serialize;
use tracing::{info_span, warn};
use utoipa::ToSchema;

use super::runner::Pause;
use super::{Supervisor, TaskError, TaskSpec};
use crate::journal::{JournalError, TaskRun};
use crate::milvus_client::{self, RowReader};
use crate::model::{CopyProgress, CopyState, Scope};
use crate::snapshot::{Copier, CopyError};
use crate::source::meta::{CollectionMeta, FIRST_USER_FIELD_ID};

/// About the bytes of a snapshot copy's page: measured against the target's direct inserts
/// (`scripts/bench`), 5 MB pages copied faster than 2.5 MB ones, and 8 MB ones no faster.
const PAGE_BYTES: u64 = 5 << 20;
/// Rows per page at most, whatever their width: Milvus answers a query with 16,384 rows at most.
const MAX_PAGE_ROWS: u64 = 10_000;
/// What a row of variable width (strings, JSON, arrays) is taken to weigh per field.
const VARIABLE_FIELD_BYTES: u64 = 64;
/// How often a task with every copy done looks for a new one (a bulk insert's).
const COPIES_RECHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Rows per page of the copy of `c`: [`PAGE_BYTES`] over its row's estimated width.
fn page_rows(c: &CollectionMeta) -> usize {
    use milvus::proto::schema::DataType;
    let row_bytes: u64 = user_fields(c)
        .map(|f| {
            let dim = || {
                f.type_params
                    .iter()
                    .find(|p| p.key == "dim")
                    .and_then(|p| p.value.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match DataType::try_from(f.data_type) {
                Ok(DataType::FloatVector) => dim() * 4,
                Ok(DataType::BinaryVector) => dim() / 8,
                Ok(DataType::Bool | DataType::Int8) => 1,
                Ok(DataType::Int16) => 2,
                Ok(DataType::Int32 | DataType::Float) => 4,
                Ok(DataType::Int64 | DataType::Double) => 8,
                _ => VARIABLE_FIELD_BYTES,
            }
        })
        .sum();
    (PAGE_BYTES / row_bytes.max(1)).clamp(100, MAX_PAGE_ROWS) as usize
}

/// What is read of a source collection: its user fields (ids of 100 and up; below are Milvus's
/// own row id and timestamp), the primary key among them.
pub(super) struct Fields {
    pub primary_key: String,
    pub names: Vec<String>,
    pub partition_key: bool,
    pub dynamic: Option<String>,
}

/// The collection's user fields: what a copy reads and writes.
fn user_fields(c: &CollectionMeta) -> impl Iterator<Item = &FieldSchema> {
    c.schema
        .fields
        .iter()
        .filter(|f| f.field_id >= FIRST_USER_FIELD_ID)
}

pub(super) fn fields(c: &CollectionMeta) -> Fields {
    let user: Vec<_> = user_fields(c).collect();
    Fields {
        primary_key: user
            .iter()
            .find(|f| f.is_primary_key)
            .map(|f| f.name.clone())
            .unwrap_or_default(),
        names: user.iter().map(|f| f.name.clone()).collect(),
        partition_key: user.iter().any(|f| f.is_partition_key),
        dynamic: user.iter().find(|f| f.is_dynamic).map(|f| f.name.clone()),
    }
}

/// The copy of `c` not begun yet.
pub(super) fn new_copy(scope: &Scope, c: &CollectionMeta) -> CopyProgress {
    let source = c.reference();
    let fields = fields(c);
    CopyProgress {
        target: scope.on_target(source.clone()),
        source,
        primary_key: fields.primary_key,
        fields: fields.names,
        partitions: c.partitions.iter().map(|p| p.name.clone()).collect(),
        partition_key: fields.partition_key,
        dynamic_field: fields.dynamic,
        page_rows: page_rows(c),
        source_rows: 0,
        rows_copied: 0,
        began_ms: 0,
        ended_ms: 0,
        start_ts: 0,
        state: CopyState::beginning(),
        recopy: None,
        repair: false,
    }
}

/// How far one collection's snapshot copy has got.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CopyView {
    /// `database.collection` on the source.
    pub collection: String,
    pub rows_copied: u64,
    /// The source's rows when the copy began (0 before).
    pub source_rows: u64,
    pub done: bool,
    /// Rows per second since the copy began (until it ended, once done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<f64>,
    /// At that rate, until every row counted at the start is copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_left: Option<f64>,
    /// Why the collection is copied again (a bulk insert on the source); none for the copy a
    /// snapshot start makes. The consistency point waits for this copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl CopyView {
    fn of(copy: &CopyProgress, now_ms: u64) -> Self {
        let done = copy.is_done();
        let until = if done { copy.ended_ms } else { now_ms };
        let elapsed = until.saturating_sub(copy.began_ms) as f64 / 1000.0;
        let rate = (copy.began_ms > 0 && elapsed > 0.0).then(|| copy.rows_copied as f64 / elapsed);
        let left = copy.source_rows.saturating_sub(copy.rows_copied) as f64;
        Self {
            collection: format!("{}.{}", copy.source.db_name, copy.source.name),
            rows_copied: copy.rows_copied,
            source_rows: copy.source_rows,
            done,
            rows_per_second: rate,
            seconds_left: rate.filter(|r| *r > 0.0 && !done).map(|r| left / r),
            reason: copy.recopy.as_ref().map(|r| r.cause.clone()),
        }
    }
}

impl Supervisor {
    /// The task's snapshot copies, one per collection; none for a task not started from one.
    pub fn copies(&self, id: &str) -> Result<Vec<CopyView>, TaskError> {
        let now = crate::model::now_ms();
        Ok(self
            .journal
            .copies(id)?
            .iter()
            .map(|c| CopyView::of(c, now))
            .collect())
    }

    /// Records a new task's copies, each to start at the source's clock now: see
    /// `CopyProgress::start_ts` (taken once every start position is).
    pub(super) async fn stage_copies(
        &self,
        run: &TaskRun,
        source: &RowReader,
        mut copies: Vec<CopyProgress>,
    ) -> Result<(), TaskError> {
        let start_ts = source.timestamp().await.map_err(TaskError::SourceApi)?;
        for copy in &mut copies {
            copy.start_ts = start_ts;
            self.journal.put_copy(run, copy)?;
        }
        Ok(())
    }

    /// A client of the source's API, which snapshot copies and verify read rows through.
    pub(super) fn source_rows(&self, spec: &TaskSpec) -> Result<RowReader, TaskError> {
        let config = self.source_of(spec)?;
        let uri = config
            .milvus_uri
            .as_deref()
            .ok_or_else(|| TaskError::NoSourceApi(self.config.table_of(&spec.source_cluster)))?;
        let (_, client) = milvus_client::connect(
            "source",
            uri,
            config.milvus_token.as_ref().map(|t| t.expose()),
            config.milvus_ca_file.as_deref(),
            &self.runtime,
        )
        .map_err(TaskError::SourceApi)?;
        Ok(RowReader {
            role: "source",
            client,
        })
    }

    /// Copies the task's collections not copied yet, and those a bulk insert on the source
    /// marks for copying again (see `imports`), until the run stops. A fault is shown in the
    /// task and retried; the task keeps running.
    pub(super) fn run_copier(self: Arc<Self>, spec: TaskSpec, run: TaskRun, stop: Arc<AtomicBool>) {
        let _span = info_span!("snapshot", task = %spec.task_id).entered();
        let health = self.health(&spec.task_id);
        let mut pause = Pause::default();
        // Connected once there is something to copy: a task with nothing to copy needs no
        // source API.
        let mut copier = None;
        while !stop.load(Ordering::Relaxed) {
            match self.journal.copies(&spec.task_id) {
                Ok(copies) if copies.iter().all(|c| c.is_done()) => {
                    super::imports::wait(&stop, COPIES_RECHECK);
                    continue;
                }
                Ok(_) => {}
                Err(JournalError::StaleRun { .. }) => return,
                Err(err) => {
                    warn!(%err, "cannot read the task's copies; retrying");
                    pause.wait(&stop);
                    continue;
                }
            }
            let copier = match &copier {
                Some(copier) => copier,
                None => match (self.source_rows(&spec), self.target_client(&spec)) {
                    (Ok(source), Ok(client)) => copier.insert(Copier {
                        run: run.clone(),
                        journal: &self.journal,
                        source,
                        target: RowReader {
                            role: "target",
                            client,
                        },
                        runtime: self.runtime.clone(),
                        stop: stop.clone(),
                        repair_dir: self.config.data_dir.join("repair").join(&spec.task_id),
                    }),
                    (Err(err), _) | (_, Err(err)) => return self.fail(&run, err.to_string()),
                },
            };
            match copier.copy_all() {
                Ok(()) => {
                    health.resolved("snapshot");
                    pause = Pause::default();
                }
                Err(CopyError::Journal(err @ JournalError::StaleRun { .. })) => {
                    return warn!(%err, "snapshot copier of an earlier run stopped");
                }
                Err(err) => {
                    warn!(%err, "snapshot copy stopped; retrying");
                    health.problem("snapshot", &err);
                    pause.wait(&stop);
                }
            }
        }
    }

    pub(super) fn target_client(
        &self,
        spec: &TaskSpec,
    ) -> Result<milvus_client::Client, TaskError> {
        let target = self.target_of(spec)?;
        milvus_client::connect(
            "target",
            &target.uri,
            Some(target.token.expose()),
            target.ca_file,
            &self.runtime,
        )
        .map(|(_, client)| client)
        .map_err(TaskError::InvalidTarget)
    }
}

#[cfg(test)]
mod tests {
    use milvus::proto::common::KeyValuePair;
    use milvus::proto::schema::{CollectionSchema, DataType, FieldSchema};

    use super::*;

    fn collection(vector_dim: u32) -> CollectionMeta {
        let field = |id: i64, data_type: DataType, dim: Option<u32>| FieldSchema {
            field_id: id,
            data_type: data_type as i32,
            type_params: dim
                .map(|d| KeyValuePair {
                    key: "dim".into(),
                    value: d.to_string(),
                })
                .into_iter()
                .collect(),
            ..Default::default()
        };
        CollectionMeta {
            schema: CollectionSchema {
                fields: vec![
                    field(0, DataType::Int64, None),
                    field(100, DataType::Int64, None),
                    field(101, DataType::FloatVector, Some(vector_dim)),
                    field(102, DataType::VarChar, None),
                ],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_page_holds_about_the_same_bytes_whatever_the_rows_width() {
        assert_eq!(
            page_rows(&collection(8)),
            10_000,
            "narrow rows: the row cap"
        );
        // 8 + 1536 * 4 + 64 bytes a row.
        assert_eq!(page_rows(&collection(1536)), (5 << 20) / 6216);
        assert_eq!(
            page_rows(&collection(32_768)),
            100,
            "the widest rows: the floor"
        );
    }
}
