//! Read-only inspection of a stopped appliance's journal (`milvus-cdc dump`).

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable};
use serde::Serialize;

use milvus::proto::milvus as rpc;
use prost::Message;

use super::lag::consistency_point;
use super::record;
use super::{
    APPLIED, IN_FLIGHT, InFlightBatch, JournalError, POISON_MESSAGES, ROWS, RowKey, RowPosition,
    SOURCE_OFFSETS, SourceOffset, TASKS, from_json,
};
use crate::model::{Change, DdlEvent, ReplicatedKind, hybrid_time, vchannel_pchannel};

/// Which journal rows to show.
#[derive(Debug, Default, Clone)]
pub struct RowFilter {
    pub task: Option<String>,
    pub channel: Option<String>,
    pub from_ts: Option<u64>,
    pub to_ts: Option<u64>,
}

impl RowFilter {
    fn task(&self, task: &str) -> bool {
        self.task.as_deref().is_none_or(|t| t == task)
    }

    fn channel(&self, channel: &str) -> bool {
        self.channel
            .as_deref()
            .is_none_or(|c| channel == c || channel.starts_with(&format!("{c}_")))
    }

    fn ts(&self, ts: u64) -> bool {
        self.from_ts.is_none_or(|f| ts >= f) && self.to_ts.is_none_or(|t| ts <= t)
    }
}

/// One line of the dump.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    Task {
        task: String,
        spec: serde_json::Value,
    },
    SourceOffset {
        task: String,
        pchannel: String,
        offset: SourceOffset,
    },
    Applied {
        task: String,
        vchannel: String,
        position: RowPosition,
    },
    InFlight {
        task: String,
        batch: InFlightBatch,
    },
    /// The task's consistency point (`journal::lag::consistency_point`), read off its offsets,
    /// applied positions and rows; None while a channel has staged no tick.
    Consistent {
        task: String,
        timestamp: Option<u64>,
    },
    /// The source message a task's reader stopped on (its task record says where and why).
    PoisonMessage {
        task: String,
        bytes: usize,
        /// The whole message, in hex.
        hex: String,
    },
    Row {
        task: String,
        vchannel: String,
        ts: u64,
        seq: u64,
        bytes: usize,
        change: String,
        collection: String,
        rows: u64,
    },
}

pub struct JournalSnapshot {
    db: ReadOnlyDatabase,
}

impl JournalSnapshot {
    pub fn open(data_dir: &Path) -> Result<Self, JournalError> {
        let path: PathBuf = data_dir.join("journal.redb");
        if !path.exists() {
            return Err(JournalError::Storage(format!(
                "no journal at {}",
                path.display()
            )));
        }
        let db = ReadOnlyDatabase::open(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => JournalError::Locked { path: path.clone() },
            redb::DatabaseError::RepairAborted => JournalError::Storage(format!(
                "journal {} was not closed cleanly and needs a repair a read-only open cannot do; \
                 start `milvus-cdc serve` on it once (it repairs on open), then stop it and dump again",
                path.display()
            )),
            other => JournalError::Open { path: path.clone(), source: Box::new(other) },
        })?;
        super::format::check_read(&db.begin_read()?, &path)?;
        Ok(Self { db })
    }

    /// The format version stored in the file; None for format 1, written before versions were.
    pub fn format_version(&self) -> Result<Option<u64>, JournalError> {
        super::format::stored(&self.db.begin_read()?)
    }

    /// Every entry passing `filter`, in table order; `max_rows` bounds the journal rows. A task
    /// record is shown as `shown_task` makes it: the journal does not know what a task is, nor
    /// which of its fields are secrets (the task's types do: `TaskSpec::shown`).
    pub fn entries(
        &self,
        filter: &RowFilter,
        max_rows: usize,
        shown_task: fn(&[u8]) -> serde_json::Value,
        mut out: impl FnMut(Entry),
    ) -> Result<(), JournalError> {
        let txn = self.db.begin_read()?;
        let mut tasks = Vec::new();
        for item in txn.open_table(TASKS)?.iter()? {
            let (k, v) = item?;
            let task = k.value().to_owned();
            if filter.task(&task) {
                tasks.push(task.clone());
                out(Entry::Task {
                    task,
                    spec: shown_task(v.value()),
                });
            }
        }
        for item in txn.open_table(SOURCE_OFFSETS)?.iter()? {
            let (k, v) = item?;
            let (task, pchannel) = k.value();
            if filter.task(task) && filter.channel(pchannel) {
                let offset =
                    serde_json::from_slice(v.value()).map_err(|e| JournalError::Corrupt {
                        what: format!("offset {task}/{pchannel}"),
                        reason: e.to_string(),
                    })?;
                out(Entry::SourceOffset {
                    task: task.into(),
                    pchannel: pchannel.into(),
                    offset,
                });
            }
        }
        for item in txn.open_table(APPLIED)?.iter()? {
            let (k, v) = item?;
            let (task, vchannel) = k.value();
            let (ts, seq) = v.value();
            if filter.task(task) && filter.channel(vchannel) {
                out(Entry::Applied {
                    task: task.into(),
                    vchannel: vchannel.into(),
                    position: RowPosition { ts, seq },
                });
            }
        }
        // Per task, whatever the channel filter: the point is the task's.
        for task in tasks {
            let timestamp = consistent_ts(&txn, &task)?;
            out(Entry::Consistent { task, timestamp });
        }
        for item in txn.open_table(IN_FLIGHT)?.iter()? {
            let (k, v) = item?;
            let task = k.value();
            if filter.task(task) {
                let batch =
                    serde_json::from_slice(v.value()).map_err(|e| JournalError::Corrupt {
                        what: format!("in-flight {task}"),
                        reason: e.to_string(),
                    })?;
                out(Entry::InFlight {
                    task: task.into(),
                    batch,
                });
            }
        }
        // Journals written before poison messages were kept have no such table.
        if let Ok(table) = txn.open_table(POISON_MESSAGES) {
            for item in table.iter()? {
                let (k, v) = item?;
                if filter.task(k.value()) {
                    out(Entry::PoisonMessage {
                        task: k.value().into(),
                        bytes: v.value().len(),
                        hex: v.value().iter().map(|b| format!("{b:02x}")).collect(),
                    });
                }
            }
        }
        let mut shown = 0;
        for item in txn.open_table(ROWS)?.iter()? {
            if shown >= max_rows {
                break;
            }
            let (k, v) = item?;
            let (task, vchannel, ts, seq) = k.value();
            if !(filter.task(task) && filter.channel(vchannel) && filter.ts(ts)) {
                continue;
            }
            let bytes = v.value().len();
            let (change, collection, rows) = match record::decode(v.value()) {
                Ok(change) => describe(&change),
                Err(err) => (format!("undecodable: {err}"), String::new(), 0),
            };
            out(Entry::Row {
                task: task.into(),
                vchannel: vchannel.into(),
                ts,
                seq,
                bytes,
                change,
                collection,
                rows,
            });
            shown += 1;
        }
        Ok(())
    }
}

/// The consistency point of `task` as the file holds it: the reads of `lag::task_lag`, made
/// on disk in one transaction. Each vchannel with rows is visited once: its first row after its
/// applied position, up to its channel's tick, then on to the next vchannel.
fn consistent_ts(txn: &ReadTransaction, task: &str) -> Result<Option<u64>, JournalError> {
    let mut ticks = HashMap::new();
    for item in txn.open_table(SOURCE_OFFSETS)?.range((task, "")..)? {
        let (k, v) = item?;
        let (t, pchannel) = k.value();
        if t != task {
            break;
        }
        let offset: SourceOffset = from_json(|| format!("offset {task}/{pchannel}"), v.value())?;
        ticks.insert(pchannel.to_owned(), offset.tick);
    }
    let applied = txn.open_table(APPLIED)?;
    let rows = txn.open_table(ROWS)?;
    let mut first_pending = Vec::new();
    let mut last: Option<String> = None;
    loop {
        // The next vchannel's first row: past every position of the last one.
        let start: Bound<RowKey> = match &last {
            None => Bound::Included((task, "", 0, 0)),
            Some(v) => Bound::Excluded((task, v.as_str(), u64::MAX, u64::MAX)),
        };
        let Some(entry) = rows.range::<RowKey>((start, Bound::Unbounded))?.next() else {
            break;
        };
        let (k, _) = entry?;
        let (t, vchannel, _, _) = k.value();
        if t != task {
            break;
        }
        let vchannel = vchannel.to_owned();
        if let Some(&tick) = vchannel_pchannel(&vchannel).and_then(|p| ticks.get(p)) {
            let v = vchannel.as_str();
            let after = applied.get((task, v))?.map(|a| a.value());
            if after.is_none_or(|after| after < (tick, u64::MAX)) {
                let from = match after {
                    Some((ts, seq)) => Bound::Excluded((task, v, ts, seq)),
                    None => Bound::Included((task, v, 0, 0)),
                };
                let through = Bound::Included((task, v, tick, u64::MAX));
                if let Some(row) = rows.range::<RowKey>((from, through))?.next() {
                    first_pending.push(row?.0.value().2);
                }
            }
        }
        last = Some(vchannel);
    }
    Ok(consistency_point(
        ticks
            .iter()
            .map(|(pchannel, tick)| (pchannel.as_str(), *tick)),
        first_pending,
    ))
}

/// A change in words: what it does, its collection (`db.name (id)`), and how many rows.
pub fn describe(change: &Change) -> (String, String, u64) {
    let collection = change.collection();
    let name = format!(
        "{}.{} ({})",
        collection.db_name, collection.name, collection.id
    );
    match change {
        Change::Insert(b) => (format!("insert into {:?}", b.partition), name, b.num_rows),
        Change::Delete(b) => (
            format!("delete from {:?}", b.partition),
            name,
            b.keys.len() as u64,
        ),
        Change::Ddl(d) => {
            let what = match &d.event {
                DdlEvent::CreateCollection { shards_num, .. } => {
                    format!("create collection ({shards_num} shards)")
                }
                DdlEvent::DropCollection => "drop collection".into(),
                DdlEvent::CreatePartition { partition } => {
                    format!("create partition {partition:?}")
                }
                DdlEvent::DropPartition { partition } => format!("drop partition {partition:?}"),
                DdlEvent::Replicated {
                    kind,
                    request,
                    waits_for,
                } => {
                    let what = replicated_summary(*kind, request);
                    if kind.is_database() {
                        return (what, collection.db_name.clone(), 0);
                    }
                    format!("{what} (waits for {} vchannels)", waits_for.len())
                }
            };
            (what, name, 0)
        }
    }
}

/// A replicate-msg event in words: the operation and what its request says.
fn replicated_summary(kind: ReplicatedKind, request: &[u8]) -> String {
    fn decoded<M: Message + Default>(request: &[u8]) -> Result<M, String> {
        M::decode(request).map_err(|e| format!("(request does not decode: {e})"))
    }
    let detail =
        match kind {
            ReplicatedKind::CreateIndex => decoded::<rpc::CreateIndexRequest>(request).map(|r| {
                let params: Vec<String> = r
                    .extra_params
                    .iter()
                    .map(|p| format!("{}={}", p.key, p.value))
                    .collect();
                format!(
                    "create index {:?} on {:?} ({})",
                    r.index_name,
                    r.field_name,
                    params.join(", ")
                )
            }),
            ReplicatedKind::DropIndex => decoded::<rpc::DropIndexRequest>(request)
                .map(|r| format!("drop index {:?} on {:?}", r.index_name, r.field_name)),
            ReplicatedKind::Load => decoded::<rpc::LoadCollectionRequest>(request)
                .map(|r| format!("load ({} replicas)", r.replica_number)),
            ReplicatedKind::Release => Ok("release".to_owned()),
            ReplicatedKind::Flush => Ok("flush".to_owned()),
            ReplicatedKind::CreateDatabase => decoded::<rpc::CreateDatabaseRequest>(request)
                .map(|r| format!("create database {:?}", r.db_name)),
            ReplicatedKind::DropDatabase => decoded::<rpc::DropDatabaseRequest>(request)
                .map(|r| format!("drop database {:?}", r.db_name)),
            ReplicatedKind::LoadPartitions => {
                decoded::<rpc::LoadPartitionsRequest>(request).map(|r| {
                    format!(
                        "load partitions {:?} ({} replicas)",
                        r.partition_names, r.replica_number
                    )
                })
            }
            ReplicatedKind::ReleasePartitions => decoded::<rpc::ReleasePartitionsRequest>(request)
                .map(|r| format!("release partitions {:?}", r.partition_names)),
            ReplicatedKind::CreateAlias => decoded::<rpc::CreateAliasRequest>(request)
                .map(|r| format!("create alias {:?}", r.alias)),
            ReplicatedKind::AlterAlias => decoded::<rpc::AlterAliasRequest>(request)
                .map(|r| format!("alter alias {:?}", r.alias)),
            ReplicatedKind::DropAlias => decoded::<rpc::DropAliasRequest>(request)
                .map(|r| format!("drop alias {:?}", r.alias)),
            ReplicatedKind::AlterCollection => {
                decoded::<rpc::AlterCollectionRequest>(request).map(|r| {
                    let properties: Vec<String> = r
                        .properties
                        .iter()
                        .map(|p| format!("{}={}", p.key, p.value))
                        .collect();
                    format!("alter collection ({})", properties.join(", "))
                })
            }
            ReplicatedKind::RenameCollection => decoded::<rpc::RenameCollectionRequest>(request)
                .map(|r| format!("rename collection {:?} to {:?}", r.old_name, r.new_name)),
            ReplicatedKind::CreateRole => decoded::<rpc::CreateRoleRequest>(request).map(|r| {
                format!(
                    "create role {:?}",
                    r.entity.map(|e| e.name).unwrap_or_default()
                )
            }),
            ReplicatedKind::DropRole => decoded::<rpc::DropRoleRequest>(request)
                .map(|r| format!("drop role {:?}", r.role_name)),
            ReplicatedKind::OperateUserRole => {
                decoded::<rpc::OperateUserRoleRequest>(request).map(|r| {
                    let verb = if r.r#type == 0 { "bind" } else { "unbind" };
                    format!("{verb} user {:?} to role {:?}", r.username, r.role_name)
                })
            }
            ReplicatedKind::OperatePrivilege => decoded::<rpc::OperatePrivilegeRequest>(request)
                .map(|r| {
                    let verb = if r.r#type == 0 { "grant" } else { "revoke" };
                    let e = r.entity.unwrap_or_default();
                    let privilege = e
                        .grantor
                        .and_then(|g| g.privilege)
                        .map(|p| p.name)
                        .unwrap_or_default();
                    format!(
                        "{verb} {privilege} on {} {:?} of database {:?} to role {:?}",
                        e.object.map(|o| o.name).unwrap_or_default(),
                        e.object_name,
                        e.db_name,
                        e.role.map(|r| r.name).unwrap_or_default()
                    )
                }),
            ReplicatedKind::CreateUser => decoded::<rpc::CreateCredentialRequest>(request)
                .map(|r| format!("create user {:?}", r.username)),
            ReplicatedKind::DropUser => decoded::<rpc::DeleteCredentialRequest>(request)
                .map(|r| format!("drop user {:?}", r.username)),
        };
    detail.unwrap_or_else(|e| format!("{} {e}", kind.operation().as_str()))
}

impl Entry {
    /// One human-readable line.
    pub fn line(&self) -> String {
        match self {
            Entry::Task { task, spec } => format!("task      {task} {spec}"),
            Entry::SourceOffset {
                task,
                pchannel,
                offset,
            } => {
                format!(
                    "offset    {task} {pchannel} next={} tick={} next_seq={}",
                    offset.next, offset.tick, offset.next_seq
                )
            }
            Entry::Applied {
                task,
                vchannel,
                position,
            } => {
                format!(
                    "applied   {task} {vchannel} ts={} seq={}",
                    position.ts, position.seq
                )
            }
            Entry::Consistent {
                task,
                timestamp: Some(ts),
            } => format!("consistent {task} through {} ({ts})", hybrid_time(*ts)),
            Entry::Consistent {
                task,
                timestamp: None,
            } => format!("consistent {task} not yet: a channel has staged no tick"),
            Entry::InFlight { task, batch } => format!("in-flight {task} {:?}", batch.ends),
            Entry::PoisonMessage { task, bytes, hex } => {
                // A line stays readable: the first 512 bytes; `--json` has all of it.
                let shown = &hex[..hex.len().min(1024)];
                let more = if shown.len() < hex.len() { "…" } else { "" };
                format!("poison    {task} message of {bytes}B: {shown}{more}")
            }
            Entry::Row {
                task,
                vchannel,
                ts,
                seq,
                bytes,
                change,
                collection,
                rows,
            } => {
                format!(
                    "row       {task} {vchannel} ts={ts} seq={seq} {bytes}B {change} {collection} rows={rows}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, TaskRun};
    use crate::model::{CollectionRef, DeleteBatch, MqPosition, PrimaryKeys, StagedChange};

    /// What the test shows of a task record.
    fn hidden(_: &[u8]) -> serde_json::Value {
        serde_json::Value::String("shown".into())
    }

    #[test]
    fn dump_reads_a_closed_journal_and_filters_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            j.put_task(
                "t",
                br#"{"task_id":"t","target":{"uri":"http://x","token":"root:Canary-7"}}"#,
            )
            .unwrap();
            let change = Change::Delete(DeleteBatch {
                collection: CollectionRef {
                    id: 3,
                    db_name: "default".into(),
                    name: "c".into(),
                },
                partition: String::new(),
                keys: PrimaryKeys::Int64(vec![1, 2]),
            });
            let rows: Vec<_> = (1..=3)
                .map(|ts| StagedChange {
                    vchannel: "p0_3v0".into(),
                    ts,
                    change: change.clone(),
                })
                .collect();
            j.stage(
                &TaskRun::unstarted("t"),
                "p0",
                &rows,
                MqPosition::Kafka { next_offset: 9 },
                3,
            )
            .unwrap();
        }
        let snapshot = JournalSnapshot::open(dir.path()).unwrap();
        let mut lines = Vec::new();
        let filter = RowFilter {
            from_ts: Some(2),
            channel: Some("p0".into()),
            ..Default::default()
        };
        snapshot
            .entries(&filter, 100, hidden, |e| lines.push(e.line()))
            .unwrap();
        assert_eq!(lines[0], "task      t \"shown\"");
        assert!(lines[1].contains("next=kafka next_offset=9 tick=3"));
        let rows: Vec<_> = lines.iter().filter(|l| l.starts_with("row")).collect();
        assert_eq!(rows.len(), 2, "{lines:?}");
        assert!(
            rows[0].contains("ts=2") && rows[0].contains("delete") && rows[0].contains("rows=2")
        );
    }

    #[test]
    fn dump_shows_each_tasks_consistency_point() {
        // A hybrid timestamp at `ms` Unix milliseconds.
        let at = |ms: u64| ms << 18;
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path()).unwrap();
            for task in ["t", "u"] {
                j.put_task(task, br#"{}"#).unwrap();
            }
            let delete = |vchannel: &str, ts| StagedChange {
                vchannel: vchannel.into(),
                ts,
                change: Change::Delete(DeleteBatch {
                    collection: CollectionRef {
                        id: 3,
                        db_name: "default".into(),
                        name: "c".into(),
                    },
                    partition: String::new(),
                    keys: PrimaryKeys::Int64(vec![1]),
                }),
            };
            let run = TaskRun::unstarted("t");
            let next = MqPosition::Kafka { next_offset: 1 };
            let tick = at(1_700_000_009_000);
            j.stage(&run, "p1", &[], next, tick).unwrap();
            let rows = [
                delete("p0_3v0", at(1_700_000_001_000)),
                delete("p0_3v0", at(1_700_000_002_000)),
                delete("p0_3v1", at(1_700_000_005_000)),
            ];
            j.stage(&run, "p0", &rows, next, tick).unwrap();
            // The first row of p0_3v0 is applied: its second one holds the point.
            let applied = InFlightBatch {
                ends: vec![(
                    "p0_3v0".into(),
                    RowPosition {
                        ts: at(1_700_000_001_000),
                        seq: u64::MAX,
                    },
                )],
            };
            j.commit_batch(&run, &applied, true).unwrap();
            j.stage(&TaskRun::unstarted("u"), "p0", &[], next, 0)
                .unwrap();
        }
        let snapshot = JournalSnapshot::open(dir.path()).unwrap();
        let mut lines = Vec::new();
        snapshot
            .entries(&RowFilter::default(), 0, hidden, |e| lines.push(e.line()))
            .unwrap();
        let through = at(1_700_000_002_000) - 1;
        assert!(
            lines.contains(&format!(
                "consistent t through 2023-11-14T22:13:21.999Z ({through})"
            )),
            "{lines:#?}"
        );
        assert!(
            lines.contains(&"consistent u not yet: a channel has staged no tick".to_owned()),
            "{lines:#?}"
        );
    }

    #[test]
    fn replicated_events_read_as_what_they_do() {
        let request = rpc::CreateIndexRequest {
            field_name: "vec".into(),
            index_name: "idx".into(),
            extra_params: vec![milvus::proto::common::KeyValuePair {
                key: "index_type".into(),
                value: "IVF_FLAT".into(),
            }],
            ..Default::default()
        };
        let change = Change::Ddl(crate::model::Ddl {
            collection: CollectionRef {
                id: 3,
                db_name: "default".into(),
                name: "c".into(),
            },
            barrier: vec!["by-dev-replicate-msg".into()],
            event: DdlEvent::Replicated {
                kind: ReplicatedKind::CreateIndex,
                request: request.encode_to_vec(),
                waits_for: vec!["v0".into(), "v1".into()],
            },
        });
        let (what, name, _) = describe(&change);
        assert_eq!(
            what,
            r#"create index "idx" on "vec" (index_type=IVF_FLAT) (waits for 2 vchannels)"#
        );
        assert_eq!(name, "default.c (3)");
        assert!(
            replicated_summary(ReplicatedKind::Load, &[0xff])
                .starts_with("load (request does not decode"),
            "a corrupt request is named, not a panic"
        );
    }

    #[test]
    fn a_journal_open_for_writing_is_reported_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _open = Journal::open(dir.path()).unwrap();
        let err = JournalSnapshot::open(dir.path()).err().unwrap();
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_journal_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = JournalSnapshot::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("journal.redb"), "{err}");
    }
}
