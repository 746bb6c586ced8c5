//! What a task's state looks like from outside: its positions (to hand to another task's
//! create), its lag now, and its lag over the last minutes for the status page.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::warn;

use super::history::Sample;
use super::{CopyView, Supervisor, TaskError, TaskState};
use crate::journal::lag::{TaskLag, task_lag};
use crate::metrics::{METRICS, Snapshot, TaskGauges};
use crate::model::{MqPosition, encode_position, hybrid_time, now_ms, physical_ms};

/// A task's read position on one physical channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChannelPosition {
    pub channel: String,
    /// The same as a base64 `msg.MsgPosition`, as the reference CDC exchanges positions: give it
    /// to a new task's create (`positions`) to start it here.
    pub position: String,
    /// The next source offset to read (Kafka; -1 on Pulsar).
    pub next_offset: i64,
    /// The stored position, readable: `kafka next_offset=N` or
    /// `pulsar after ledger=L entry=E batch=B partition=P`.
    pub readable: String,
    /// The newest TimeTick staged: every change at or below it is in the journal.
    pub tick: u64,
}

/// The last journal position of one vchannel that the target acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppliedPosition {
    pub vchannel: String,
    /// Source timestamp (hybrid: physical milliseconds << 18 | logical).
    pub ts: u64,
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TaskPositions {
    pub channels: Vec<ChannelPosition>,
    pub applied: Vec<AppliedPosition>,
}

/// A task's consistency point: the target holds the source's state as of `timestamp` (every
/// change of every in-scope channel at or before it is applied). Derived from the applied
/// positions and ticks in the journal, so it survives restarts.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ConsistencyPoint {
    /// Source timestamp (hybrid: physical milliseconds << 18 | logical).
    pub timestamp: u64,
    /// Its physical time, RFC 3339 UTC (`2024-05-01T12:00:00.123Z`).
    pub time: String,
    /// The recovery point objective now: how many seconds of source changes the target may lack
    /// (now minus `time`).
    pub rpo_seconds: f64,
}

impl ConsistencyPoint {
    /// The point at hybrid timestamp `ts`, seen at `now_ms` (Unix milliseconds).
    pub fn at(ts: u64, now_ms: u64) -> Self {
        Self {
            timestamp: ts,
            time: hybrid_time(ts),
            rpo_seconds: now_ms.saturating_sub(physical_ms(ts)) as f64 / 1000.0,
        }
    }
}

/// A task as the status page shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    pub reason: String,
    /// The largest apply lag over the task's vchannels, now.
    pub lag_seconds: Option<f64>,
    /// Omitted until every channel of the task has staged a tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistent_through: Option<ConsistencyPoint>,
    pub rows_per_second: Option<f64>,
    /// The last 15 minutes.
    pub history: Vec<Sample>,
    /// For a task started from a snapshot, how far each collection's copy has got.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshot: Vec<CopyView>,
    /// What the last verify since the server started found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
}

/// The outcome of a verify of a task.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// When it ended (UTC).
    pub time: String,
    /// No difference found.
    pub equal: bool,
    /// Every collection could be compared.
    pub complete: bool,
}

impl Supervisor {
    /// Where the task is: per physical channel the next source offset and the newest TimeTick
    /// staged, per vchannel the position applied to the target.
    pub fn positions(&self, id: &str) -> Result<TaskPositions, TaskError> {
        self.task(id)?;
        let channels = self
            .journal
            .source_offsets(id)?
            .into_iter()
            .map(|(pchannel, offset)| {
                let next_offset = match offset.next {
                    MqPosition::Kafka { next_offset } => next_offset,
                    MqPosition::Pulsar { .. } => -1,
                };
                ChannelPosition {
                    readable: offset.next.to_string(),
                    position: encode_position(&pchannel, &offset.next, offset.tick),
                    channel: pchannel,
                    next_offset,
                    tick: offset.tick,
                }
            })
            .collect();
        Ok(TaskPositions {
            channels,
            applied: self
                .journal
                .applied_positions(id)?
                .into_iter()
                .map(|(vchannel, p)| AppliedPosition {
                    vchannel,
                    ts: p.ts,
                    seq: p.seq,
                })
                .collect(),
        })
    }

    /// Samples every task's lag and applied rows every `every`, for the status page.
    pub fn start_sampling(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        std::thread::spawn(move || {
            while let Some(supervisor) = me.upgrade() {
                if let Err(err) = supervisor.sample(now_ms()) {
                    warn!(%err, "cannot sample the tasks' lag");
                }
                drop(supervisor);
                std::thread::sleep(every);
            }
        });
    }

    fn sample(&self, now_ms: u64) -> Result<(), TaskError> {
        for spec in self.tasks()? {
            let id = &spec.task_id;
            let sample = Sample {
                at_ms: now_ms,
                lag_seconds: max_lag(&self.lag(id, now_ms)?),
                rows_applied: METRICS.task_rows_applied(id).get(),
            };
            self.history.record(id, sample);
        }
        Ok(())
    }

    /// How far behind the task is at `now_ms`, and its consistency point.
    pub(super) fn lag(&self, id: &str, now_ms: u64) -> Result<TaskLag, TaskError> {
        Ok(task_lag(
            &self.journal,
            id,
            now_ms,
            &self.health(id).ends(),
        )?)
    }

    /// The task's consistency point now, if it has one yet.
    pub fn consistent_through(&self, id: &str) -> Result<Option<ConsistencyPoint>, TaskError> {
        let now = now_ms();
        let lag = self.lag(id, now)?;
        Ok(lag.consistent_ts.map(|ts| ConsistencyPoint::at(ts, now)))
    }

    /// Every task with its lag now, its consistency point, its throughput and its lag over the
    /// last 15 minutes.
    pub fn status(&self) -> Result<Vec<TaskStatus>, TaskError> {
        let now = now_ms();
        self.tasks()?
            .into_iter()
            .map(|spec| {
                let id = &spec.task_id;
                let lag = self.lag(id, now)?;
                Ok(TaskStatus {
                    lag_seconds: max_lag(&lag),
                    consistent_through: lag.consistent_ts.map(|ts| ConsistencyPoint::at(ts, now)),
                    rows_per_second: self.history.rows_per_second(id),
                    history: self.history.of(id),
                    snapshot: self.copies(id)?,
                    verified: self.verified(id),
                    state: spec.state,
                    reason: spec.reason.clone().unwrap_or_default(),
                    task_id: spec.task_id,
                })
            })
            .collect()
    }
}

impl Supervisor {
    /// The gauges `/metrics` shows now: the journal's size and every task's state, lag and
    /// consistency point. In a group, only of the tasks no other member owns: each task's
    /// series come from the one member that runs it (the others hold a copy of its record,
    /// and perhaps lag from when they ran it), so an alert on them fires once, and rightly.
    pub fn metrics_snapshot(&self) -> Result<Snapshot, TaskError> {
        let now = now_ms();
        let tasks = self
            .tasks()?
            .into_iter()
            .filter(|spec| self.owned_elsewhere(&spec.task_id).is_none())
            .map(|spec| {
                let lag = self.lag(&spec.task_id, now)?;
                Ok(TaskGauges {
                    state: format!("{:?}", spec.state),
                    source_lag: lag.source,
                    target_lag: lag.target,
                    consistent: lag.consistent_ts.map(|ts| {
                        let point = ConsistencyPoint::at(ts, now);
                        (physical_ms(ts) as f64 / 1000.0, point.rpo_seconds)
                    }),
                    snapshot: self
                        .copies(&spec.task_id)?
                        .into_iter()
                        .map(|c| (c.collection, (c.rows_copied, c.source_rows)))
                        .collect(),
                    task: spec.task_id,
                })
            })
            .collect::<Result<_, TaskError>>()?;
        let cluster_roles = self
            .cluster_roles()?
            .into_iter()
            .map(|c| (c.name, c.role.as_str().to_owned()))
            .collect();
        Ok(Snapshot {
            journal_bytes: self.journal.journal_bytes()?,
            journal_rows: self.journal.journal_rows()?,
            staging_held: self.journal.disk_hold().is_some(),
            ready: self.journal.unready().is_none(),
            tasks,
            cluster_roles,
            group: self.group_view().map(|g| crate::metrics::GroupGauges {
                owners: g.owners.into_iter().collect(),
                takeovers: g.takeovers,
                heartbeats: g
                    .members
                    .iter()
                    .map(|m| (m.name.clone(), m.heartbeat_ms as f64 / 1000.0))
                    .collect(),
            }),
        })
    }
}

fn max_lag(lag: &TaskLag) -> Option<f64> {
    lag.target.values().copied().reduce(f64::max)
}
