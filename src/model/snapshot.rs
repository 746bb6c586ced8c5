//! A snapshot copy: the rows of a collection that existed when its task started, copied from
//! the source's API while the journal holds the changes made since.

use serde::{Deserialize, Serialize};

use super::CollectionRef;

/// A primary key, ordered as Milvus orders it (numbers by value, strings by bytes).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(untagged)]
pub enum PrimaryKey {
    Int(i64),
    Str(String),
}

impl PrimaryKey {
    /// The key as a literal of a Milvus boolean expression.
    pub fn literal(&self) -> String {
        match self {
            PrimaryKey::Int(n) => n.to_string(),
            PrimaryKey::Str(s) => {
                let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{escaped}\"")
            }
        }
    }
}

impl std::fmt::Display for PrimaryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrimaryKey::Int(n) => write!(f, "{n}"),
            PrimaryKey::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// How far the copy of one collection has got; checkpointed in the journal after every page
/// the target acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyProgress {
    pub source: CollectionRef,
    pub target: CollectionRef,
    pub primary_key: String,
    /// Every user field, read on the source and written to the target.
    pub fields: Vec<String>,
    pub partitions: Vec<String>,
    /// Its rows are placed by a partition key, not by the partition named.
    pub partition_key: bool,
    /// The name of its dynamic field, if it has one (`$meta`).
    pub dynamic_field: Option<String>,
    /// Rows per page read and sent: about the same bytes a page, whatever the row's width.
    #[serde(default = "default_page_rows")]
    pub page_rows: usize,
    /// The source's rows when the copy began (`count(*)`), for progress.
    pub source_rows: u64,
    pub rows_copied: u64,
    /// When the copy began and ended (Unix ms), for its rate; 0 before.
    pub began_ms: u64,
    pub ended_ms: u64,
    /// The source's timestamp once the task's start positions were taken. Every change at or
    /// before it is in the copy, which reads the source as of a later time; every later change
    /// is in the journal. The journal may also hold changes at or before it: the messages past
    /// a start position of a write that began before it (an upsert is an Insert, then a Delete
    /// of the same keys). Such a part alone would undo the copy, the Delete removing the rows
    /// the Insert brought, so the applier passes over them (0: nothing is passed over).
    #[serde(default)]
    pub start_ts: u64,
    pub state: CopyState,
    /// Set when the collection is copied again because rows reached the source without a
    /// message (a bulk insert): the target already holds rows, so every page goes as an upsert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recopy: Option<Recopy>,
    /// Copied by difference onto a target that holds rows already (start `repair`): each page
    /// goes as an upsert, the target's rows it replaces and the keys it lacks are saved first,
    /// and those keys deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repair: bool,
}

/// Why a collection is copied again, and the consistency point it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recopy {
    /// What the source did, for the task's status (`bulk insert 4709... completed`).
    pub cause: String,
    /// A source timestamp at or before the rows arrived on the source: the consistency point
    /// stays below it until the copy is done.
    pub holds_from: u64,
    /// The segments the source wrote the rows into: the copy begins once the source's queries
    /// see them (Milvus loads them some seconds after the import completed).
    #[serde(default)]
    pub segments: Vec<i64>,
}

/// The page of copies recorded before pages were sized by their rows' width.
fn default_page_rows() -> usize {
    5_000
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyState {
    /// Copying partition `partition` (an index into `partitions`) after key `after`.
    /// `in_doubt`: pages were being sent when the copy stopped, so the target may have some of
    /// the partition's rows past `after`, through key `doubt_through` (None: in the next page,
    /// as copies recorded before pages went side by side say); they are sent as upserts.
    Copying {
        partition: usize,
        after: Option<PrimaryKey>,
        in_doubt: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        doubt_through: Option<PrimaryKey>,
    },
    /// Done: the journal's changes of the collection up to `replay_through` (a source
    /// timestamp past every read of the copy) may already be in the rows copied, so they are
    /// applied as replays (inserts as upserts).
    Done { replay_through: u64 },
}

impl CopyState {
    /// Before the first page of the first partition.
    pub fn beginning() -> Self {
        Self::Copying {
            partition: 0,
            after: None,
            in_doubt: false,
            doubt_through: None,
        }
    }
}

impl CopyProgress {
    /// The copy of `collection` (an `id` key, one partition) in `state`: what tests start from.
    #[cfg(test)]
    pub fn of_test_collection(collection: CollectionRef, state: CopyState) -> Self {
        Self {
            source: collection.clone(),
            target: collection,
            primary_key: "id".into(),
            fields: vec!["id".into()],
            partitions: vec!["_default".into()],
            partition_key: false,
            dynamic_field: None,
            page_rows: 100,
            source_rows: 0,
            rows_copied: 0,
            began_ms: 0,
            ended_ms: 0,
            start_ts: 0,
            state,
            recopy: None,
            repair: false,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, CopyState::Done { .. })
    }
}
