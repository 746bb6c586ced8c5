//! `/metrics` in Prometheus text: process-wide counters, and per task the lag and state read
//! from the journal at scrape time (so they are exact, and survive restarts).

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::{Change, Operation};

pub struct Metrics {
    pub messages_read: Counter,
    pub messages_rejected: Counter,
    pub poison_skipped: Counter,
    pub messages_duplicate: Counter,
    pub changes_staged: Counter,
    pub batches_applied: Counter,
    pub rows_applied: Counter,
    pub target_retries: Counter,
    /// Rows per applied data batch.
    pub batch_rows: Histogram,
    /// Seconds from sending a data batch to the target's acknowledgement, retries included.
    pub batch_seconds: Histogram,
    /// Unix time, in seconds, of the latest data batch the target acknowledged.
    pub last_applied: Seconds,
    /// Where the appliers' time goes, per stage of a data batch.
    applier_seconds: Family<StageLabels, Counter<f64, AtomicU64>>,
    task_rows_applied: Family<TaskLabels, Counter>,
    staged: OperationCounters,
    applied: OperationCounters,
    errors: Family<ErrorLabels, Counter>,
    api_refused: Family<RefusalLabels, Counter>,
    messages_ignored: Family<TypeLabels, Counter>,
}

/// Changes, rows and bytes per task and operation.
#[derive(Default)]
struct OperationCounters {
    changes: Family<OperationLabels, Counter>,
    rows: Family<OperationLabels, Counter>,
    bytes: Family<OperationLabels, Counter>,
}

impl OperationCounters {
    fn add(&self, task: &str, op: Operation, rows: u64, bytes: u64) {
        let labels = OperationLabels {
            task: task.into(),
            op: op.as_str(),
        };
        self.changes.get_or_create(&labels).inc();
        self.rows.get_or_create(&labels).inc_by(rows);
        self.bytes.get_or_create(&labels).inc_by(bytes);
    }

    fn register(&self, registry: &mut Registry, stage: &str, what: &str) {
        for (unit, help, family) in [
            ("changes", "Changes", &self.changes),
            ("rows", "Rows", &self.rows),
            ("bytes", "Bytes of row data", &self.bytes),
        ] {
            registry.register(
                format!("{stage}_{unit}"),
                format!("{help} {what}, per task and operation"),
                family.clone(),
            );
        }
    }
}

/// What went wrong, for `milvus_cdc_errors_total{kind}`.
#[derive(Debug, Clone, Copy)]
pub enum ErrorKind {
    /// A source message that does not decode or capture (skipped).
    MessageRejected,
    /// A target call that failed and is retried.
    TargetTransient,
    /// A target refusal that fails the task.
    TargetPermanent,
    /// The target refuses every call (credentials, privileges, a collection gone): retried.
    TargetBlocked,
    /// The applier stopped on another error (the journal) and restarts.
    Applier,
    /// The source's etcd could not be reached.
    SourceEtcd,
    /// The source broker could not be reached or listed.
    Broker,
    /// A channel reader stopped (broker or journal) and restarts from its stored offset.
    Reader,
}

impl ErrorKind {
    /// Every kind, each shown at 0 from the start: an error series that first appears at 1 is
    /// no increase to Prometheus, so the first error of its kind would go unseen.
    const ALL: [ErrorKind; 8] = [
        ErrorKind::MessageRejected,
        ErrorKind::TargetTransient,
        ErrorKind::TargetPermanent,
        ErrorKind::TargetBlocked,
        ErrorKind::Applier,
        ErrorKind::SourceEtcd,
        ErrorKind::Broker,
        ErrorKind::Reader,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::MessageRejected => "message_rejected",
            ErrorKind::TargetTransient => "target_transient",
            ErrorKind::TargetPermanent => "target_permanent",
            ErrorKind::TargetBlocked => "target_blocked",
            ErrorKind::Applier => "applier",
            ErrorKind::SourceEtcd => "source_etcd",
            ErrorKind::Broker => "broker",
            ErrorKind::Reader => "reader",
        }
    }
}

impl Metrics {
    /// Rows the task applied to the target since the process started.
    pub fn task_rows_applied(&self, task: &str) -> Counter {
        self.task_rows_applied
            .get_or_create(&TaskLabels { task: task.into() })
            .clone()
    }

    /// Changes the task's reader committed to the journal.
    pub fn staged<'a>(&self, task: &str, changes: impl IntoIterator<Item = &'a Change>) {
        for change in changes {
            self.staged
                .add(task, change.operation(), change.rows(), change.bytes());
        }
    }

    /// One operation the target acknowledged.
    pub fn applied(&self, task: &str, op: Operation, rows: u64, bytes: u64) {
        self.applied.add(task, op, rows, bytes);
    }

    /// Adds the time since `since` to an applier stage.
    pub fn applier_stage(&self, stage: &'static str, since: std::time::Instant) {
        self.applier_seconds
            .get_or_create(&StageLabels { stage })
            .inc_by(since.elapsed().as_secs_f64());
    }

    /// An API request refused before it was handled: `reason` is `host`, `origin` or `token`.
    pub fn api_refused(&self, reason: &'static str) {
        self.api_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// A message of a type that carries nothing for the target, passed over; true for the
    /// first of its type since the process started (the one worth a log line).
    pub fn ignored(&self, msg_type: &'static str) -> bool {
        self.messages_ignored
            .get_or_create(&TypeLabels { r#type: msg_type })
            .inc()
            == 0
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.as_str(),
            })
            .inc();
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    messages_read: Counter::default(),
    messages_rejected: Counter::default(),
    poison_skipped: Counter::default(),
    messages_duplicate: Counter::default(),
    changes_staged: Counter::default(),
    batches_applied: Counter::default(),
    rows_applied: Counter::default(),
    target_retries: Counter::default(),
    batch_rows: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
    batch_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
    last_applied: Seconds::default(),
    applier_seconds: Family::default(),
    task_rows_applied: Family::default(),
    staged: OperationCounters::default(),
    applied: OperationCounters::default(),
    errors: errors_at_zero(),
    api_refused: Family::default(),
    messages_ignored: Family::default(),
});

fn errors_at_zero() -> Family<ErrorLabels, Counter> {
    let errors = Family::default();
    for kind in ErrorKind::ALL {
        let _ = errors.get_or_create(&ErrorLabels {
            kind: kind.as_str(),
        });
    }
    errors
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    task: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    task: String,
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CollectionLabels {
    task: String,
    collection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    cluster: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    task: String,
    state: String,
}

type Seconds = Gauge<f64, AtomicU64>;

/// What the journal and the tasks say at the moment of a scrape, as plain values.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub journal_bytes: u64,
    pub journal_rows: u64,
    /// Staging is held for room on the journal's disk.
    pub staging_held: bool,
    /// What `/readyz` answers: the journal can stage and write.
    pub ready: bool,
    pub tasks: Vec<TaskGauges>,
    /// Each configured cluster's role (`primary`, `standby`, `fenced`, `lost`, `none`).
    pub cluster_roles: Vec<(String, String)>,
    /// With `[group]`: each owned task's owner, and the takeovers this member made.
    pub group: Option<GroupGauges>,
}

#[derive(Debug, Default)]
pub struct GroupGauges {
    pub owners: Vec<(String, String)>,
    pub takeovers: u64,
    /// Each live member's last heartbeat, in Unix seconds.
    pub heartbeats: Vec<(String, f64)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerLabels {
    task: String,
    member: String,
}

/// One task's state and lag, in seconds per channel.
#[derive(Debug)]
pub struct TaskGauges {
    pub task: String,
    pub state: String,
    /// Per physical channel: age of the newest source TimeTick staged.
    pub source_lag: BTreeMap<String, f64>,
    /// Per vchannel: age of the oldest change not applied yet.
    pub target_lag: BTreeMap<String, f64>,
    /// The consistency point, in Unix seconds, and its age (the RPO) in seconds; None until
    /// every channel has staged a tick.
    pub consistent: Option<(f64, f64)>,
    /// Per collection of a snapshot copy: rows copied, and the source's rows when it began.
    pub snapshot: BTreeMap<String, (u64, u64)>,
}

/// The Prometheus text of every metric, with `snapshot`'s gauges.
pub fn render(snapshot: &Snapshot) -> Result<String, String> {
    let mut registry = Registry::with_prefix("milvus_cdc");
    register_counters(&mut registry);
    register_journal(&mut registry, snapshot);
    register_tasks(&mut registry, &snapshot.tasks);
    register_roles(&mut registry, &snapshot.cluster_roles);
    if let Some(group) = &snapshot.group {
        register_group(&mut registry, group);
    }
    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The process's counters and histograms, kept as they happen.
fn register_counters(registry: &mut Registry) {
    let m = &*METRICS;
    for (name, help, counter) in [
        (
            "messages_read",
            "Messages fetched from the source MQ",
            &m.messages_read,
        ),
        (
            "messages_rejected",
            "Messages that did not decode or capture (poisons)",
            &m.messages_rejected,
        ),
        (
            "poison_skipped",
            "Poisons passed over, approved by an operator or by the task's skip_poison; each is logged",
            &m.poison_skipped,
        ),
        (
            "messages_duplicate",
            "Messages read before (a repeated offset, or a data message byte-identical to an earlier one); skipped",
            &m.messages_duplicate,
        ),
        (
            "changes_staged",
            "Changes written to the journal",
            &m.changes_staged,
        ),
        (
            "batches_applied",
            "Batches the target acknowledged",
            &m.batches_applied,
        ),
        (
            "rows_applied",
            "Rows inserted or deleted on the target",
            &m.rows_applied,
        ),
        (
            "target_retries",
            "Target calls retried after a transient error",
            &m.target_retries,
        ),
    ] {
        registry.register(name, help, counter.clone());
    }
    registry.register(
        "task_rows_applied",
        "Rows inserted or deleted on the target, per task",
        m.task_rows_applied.clone(),
    );
    m.staged
        .register(registry, "staged", "written to the journal");
    m.applied
        .register(registry, "applied", "acknowledged by the target");
    registry.register(
        "errors",
        "Errors by kind (message_rejected, target_transient, target_permanent, target_blocked, applier, source_etcd, broker, reader)",
        m.errors.clone(),
    );
    registry.register(
        "api_requests_refused",
        "API requests refused before they were handled, by reason: host (not addressed to the appliance), origin (sent by another site's page), token (missing or wrong)",
        m.api_refused.clone(),
    );
    registry.register(
        "messages_ignored",
        "Messages of a type that carries nothing for the target (reads, the cluster's bookkeeping, what the metadata watcher replicates from etcd), by type; the first of each type is logged",
        m.messages_ignored.clone(),
    );
    registry.register(
        "apply_batch_rows",
        "Rows per data batch applied to the target",
        m.batch_rows.clone(),
    );
    registry.register(
        "last_applied_seconds",
        "Unix time of the latest data batch the target acknowledged",
        m.last_applied.clone(),
    );
    registry.register(
        "applier_seconds",
        "Time the appliers spent per stage of a data batch: plan (reading the journal), mark (the in-flight marker alone), send (target calls, on the sender thread), commit (applied positions of acknowledged batches, with the marker of those still outstanding)",
        m.applier_seconds.clone(),
    );
    registry.register(
        "apply_batch_seconds",
        "Time from sending a data batch to the target's acknowledgement, retries included",
        m.batch_seconds.clone(),
    );
}

/// The journal's size and whether it can stage, as of the snapshot.
fn register_journal(registry: &mut Registry, snapshot: &Snapshot) {
    for (name, help, value) in [
        (
            "journal_bytes",
            "Bytes of changes staged and not yet applied, all tasks",
            snapshot.journal_bytes as i64,
        ),
        (
            "journal_rows",
            "Rows the journal holds, all tasks",
            snapshot.journal_rows as i64,
        ),
        (
            "journal_staging_held",
            "1 while staging is held: the journal's disk has less free space than the room the journal keeps ([journal] disk_reserve_bytes, or one growth of its file)",
            i64::from(snapshot.staging_held),
        ),
        (
            "ready",
            "1 when /readyz answers 200; 0 when the journal's disk is too full to stage or its writes fail",
            i64::from(snapshot.ready),
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
}

/// Each task's state, lag, consistency point and snapshot copy progress.
fn register_tasks(registry: &mut Registry, tasks: &[TaskGauges]) {
    let source_lag = Family::<ChannelLabels, Seconds>::default();
    let target_lag = Family::<ChannelLabels, Seconds>::default();
    let state = Family::<StateLabels, Gauge>::default();
    let consistent = Family::<TaskLabels, Seconds>::default();
    let rpo = Family::<TaskLabels, Seconds>::default();
    let copied = Family::<CollectionLabels, Gauge>::default();
    let to_copy = Family::<CollectionLabels, Gauge>::default();
    for task in tasks {
        for (collection, (rows, of)) in &task.snapshot {
            let labels = CollectionLabels {
                task: task.task.clone(),
                collection: collection.clone(),
            };
            copied.get_or_create(&labels).set(*rows as i64);
            to_copy.get_or_create(&labels).set(*of as i64);
        }
        if let Some((at, age)) = task.consistent {
            let labels = TaskLabels {
                task: task.task.clone(),
            };
            consistent.get_or_create(&labels).set(at);
            rpo.get_or_create(&labels).set(age);
        }
        for (family, values) in [
            (&source_lag, &task.source_lag),
            (&target_lag, &task.target_lag),
        ] {
            for (channel, seconds) in values {
                let labels = ChannelLabels {
                    task: task.task.clone(),
                    channel: channel.clone(),
                };
                family.get_or_create(&labels).set(*seconds);
            }
        }
        state
            .get_or_create(&StateLabels {
                task: task.task.clone(),
                state: task.state.clone(),
            })
            .set(1);
    }
    registry.register(
        "source_lag_seconds",
        "Per task and physical channel: age of the newest source TimeTick staged",
        source_lag,
    );
    registry.register(
        "lag_seconds",
        "Per task and vchannel: age of the oldest change not applied to the target yet (of the newest TimeTick when all is applied)",
        target_lag,
    );
    registry.register(
        "consistent_timestamp_seconds",
        "Per task: the consistency point, in Unix seconds: the target holds the source's state as of this time (every channel applied through it)",
        consistent,
    );
    registry.register(
        "rpo_seconds",
        "Per task: age of the consistency point, the source changes the target may lack",
        rpo,
    );
    registry.register(
        "snapshot_rows_copied",
        "Per task and collection of a snapshot copy: rows copied to the target",
        copied,
    );
    registry.register(
        "snapshot_source_rows",
        "Per task and collection of a snapshot copy: the source's rows when the copy began",
        to_copy,
    );
    registry.register("task_state", "1 for each task's current state", state);
}

/// Each configured cluster's role.
fn register_roles(registry: &mut Registry, cluster_roles: &[(String, String)]) {
    let roles = Family::<RoleLabels, Gauge>::default();
    for (cluster, role) in cluster_roles {
        roles
            .get_or_create(&RoleLabels {
                cluster: cluster.clone(),
                role: role.clone(),
            })
            .set(1);
    }
    registry.register(
        "cluster_role",
        "1 for each configured cluster's role: primary, standby, fenced (a switchover under way), lost (failed over from), none",
        roles,
    );
}

/// With `[group]`: who owns each task, the members' heartbeats and this member's takeovers.
fn register_group(registry: &mut Registry, group: &GroupGauges) {
    let owners = Family::<OwnerLabels, Gauge>::default();
    for (task, member) in &group.owners {
        owners
            .get_or_create(&OwnerLabels {
                task: task.clone(),
                member: member.clone(),
            })
            .set(1);
    }
    registry.register(
        "task_owner",
        "1 for the group member that owns each task",
        owners,
    );
    let heartbeats = Family::<MemberLabels, Gauge<f64, AtomicU64>>::default();
    for (member, at) in &group.heartbeats {
        heartbeats
            .get_or_create(&MemberLabels {
                member: member.clone(),
            })
            .set(*at);
    }
    registry.register(
        "group_member_heartbeat_seconds",
        "Each live member of the group's last heartbeat, in Unix seconds",
        heartbeats,
    );
    let takeovers = Counter::<u64>::default();
    takeovers.inc_by(group.takeovers);
    registry.register(
        "task_takeovers",
        "Tasks this member took over from their checkpoint since it started",
        takeovers,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CollectionRef, DeleteBatch, PrimaryKeys};

    #[test]
    fn changes_rows_and_bytes_are_counted_per_task_and_operation() {
        let delete = Change::Delete(DeleteBatch {
            collection: CollectionRef {
                id: 1,
                db_name: "default".into(),
                name: "c".into(),
            },
            partition: String::new(),
            keys: PrimaryKeys::VarChar(vec!["ab".into(), "cde".into()]),
        });
        METRICS.staged("ops", [&delete, &delete]);
        METRICS.applied("ops", Operation::Delete, 2, 5);
        METRICS.applied("ops", Operation::CreateCollection, 0, 0);
        METRICS.error(ErrorKind::MessageRejected);
        assert!(METRICS.ignored("DescribeSegments"), "the first of its type");
        assert!(!METRICS.ignored("DescribeSegments"), "the second is not");
        let text = render(&Snapshot::default()).unwrap();
        for line in [
            r#"milvus_cdc_staged_changes_total{task="ops",op="delete"} 2"#,
            r#"milvus_cdc_staged_rows_total{task="ops",op="delete"} 4"#,
            r#"milvus_cdc_staged_bytes_total{task="ops",op="delete"} 10"#,
            r#"milvus_cdc_applied_rows_total{task="ops",op="delete"} 2"#,
            r#"milvus_cdc_applied_bytes_total{task="ops",op="delete"} 5"#,
            r#"milvus_cdc_applied_changes_total{task="ops",op="create_collection"} 1"#,
            r#"milvus_cdc_errors_total{kind="message_rejected"} "#,
            r#"milvus_cdc_messages_ignored_total{type="DescribeSegments"} 2"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn the_text_has_counters_lag_and_state() {
        let snapshot = Snapshot {
            cluster_roles: Vec::new(),
            group: None,
            journal_bytes: 0,
            journal_rows: 0,
            staging_held: false,
            ready: true,
            tasks: vec![TaskGauges {
                task: "t".into(),
                state: "Running".into(),
                source_lag: [("p0".to_owned(), 2.0)].into(),
                target_lag: BTreeMap::new(),
                consistent: Some((1_700_000_000.25, 3.5)),
                snapshot: [("default.c".to_owned(), (40, 100))].into(),
            }],
        };
        let text = render(&snapshot).unwrap();
        assert!(text.contains("milvus_cdc_rows_applied_total "), "{text}");
        assert!(text.contains("milvus_cdc_last_applied_seconds "), "{text}");
        assert!(
            text.contains("milvus_cdc_apply_batch_seconds_bucket{le="),
            "{text}"
        );
        assert!(text.contains("milvus_cdc_journal_bytes 0"), "{text}");
        assert!(text.contains("milvus_cdc_journal_rows 0"), "{text}");
        assert!(text.contains("milvus_cdc_journal_staging_held 0"), "{text}");
        assert!(text.contains("milvus_cdc_ready 1"), "{text}");
        assert!(
            text.contains(r#"milvus_cdc_source_lag_seconds{task="t",channel="p0"} 2.0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"milvus_cdc_task_state{task="t",state="Running"} 1"#),
            "{text}"
        );
        for line in [
            r#"milvus_cdc_consistent_timestamp_seconds{task="t"} 1700000000.25"#,
            r#"milvus_cdc_rpo_seconds{task="t"} 3.5"#,
            r#"milvus_cdc_snapshot_rows_copied{task="t",collection="default.c"} 40"#,
            r#"milvus_cdc_snapshot_source_rows{task="t",collection="default.c"} 100"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }

    #[test]
    fn every_error_kind_is_shown_before_its_first_error() {
        let text = render(&Snapshot::default()).unwrap();
        for kind in ErrorKind::ALL {
            let series = format!(r#"milvus_cdc_errors_total{{kind="{}"}} "#, kind.as_str());
            assert!(text.contains(&series), "{series} not in\n{text}");
        }
    }

    #[test]
    fn a_held_journal_shows_staging_held_and_not_ready() {
        let snapshot = Snapshot {
            staging_held: true,
            ready: false,
            ..Snapshot::default()
        };
        let text = render(&snapshot).unwrap();
        assert!(text.contains("milvus_cdc_journal_staging_held 1"), "{text}");
        assert!(text.contains("milvus_cdc_ready 0"), "{text}");
    }

    #[test]
    fn a_task_without_a_consistency_point_has_no_such_gauges() {
        let snapshot = Snapshot {
            cluster_roles: Vec::new(),
            group: None,
            tasks: vec![TaskGauges {
                task: "t".into(),
                state: "Running".into(),
                source_lag: BTreeMap::new(),
                target_lag: BTreeMap::new(),
                consistent: None,
                snapshot: BTreeMap::new(),
            }],
            ..Snapshot::default()
        };
        let text = render(&snapshot).unwrap();
        assert!(!text.contains(r#"milvus_cdc_rpo_seconds{"#), "{text}");
        assert!(
            !text.contains(r#"milvus_cdc_consistent_timestamp_seconds{"#),
            "{text}"
        );
    }
}
