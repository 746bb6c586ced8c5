//! Switchover: a planned move of the writes from a task's source (A) to its target (B), both
//! up, losing nothing (RPO 0); then the reverse task (B to A) keeps A a copy of B.
//!
//! 1. The switchover is recorded in the task, then A's write fence is set
//!    (`SourceMeta::set_write_fence`): A refuses inserts, deletes, upserts and imports.
//! 2. Fenced: every collection of the task's scope on A refuses a probe write of no rows
//!    (`milvus_client::fence::fenced`). `fence_ts`, a timestamp A allocates after that, is later
//!    than every write A accepted.
//! 3. Drained: the task's consistency point passes `fence_ts`, so B holds all of A; and then a
//!    second timestamp, `drained_ts`. Proof that the fence held: no insert or delete of A
//!    stamped after `fence_ts` was staged meanwhile (`Health::newest_data_staged`).
//! 4. With `verify`, the collections are compared row by row.
//! 5. The task is paused, the reverse task created (B to A, the same collections, from B's
//!    latest positions: it adopts the collections A has), and A's fence lifted: the reverse
//!    task writes to A. The write outage is from the fence to the reverse task running.
//!
//! Until 5, a failure (the drain not done in time, a write past the fence, a difference) lifts
//! the fence and leaves the task running as before, saying why. DDL is not fenced: the
//! operator stops it on A first.
//!
//! Crash behaviour: the fence stays set (A refuses writes: safe) and the task says a
//! switchover is under way. Repeated, the command begins again at 1 (setting the fence again
//! is harmless) while the task runs, and at 5 once it is paused: the create of the reverse
//! task is idempotent by its id. Once done, it answers its report.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::failover::SourceTime;
use super::{Created, Supervisor, TargetSpec, TaskError, TaskSpec, TaskState};
use crate::milvus_client::fence;
use crate::model::{CollectionRef, hybrid_time, now_ms};
use crate::verify::Limits;

/// How often the drain's progress is looked at.
const DRAIN_CHECK: Duration = Duration::from_millis(200);

/// What a switchover is asked to do.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// Seconds the fence may last before the drain is done; past them, the switchover is
    /// called off and the fence lifted.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Compare the collections row by row before the reverse task starts.
    #[serde(default)]
    pub verify: bool,
    /// The reverse task's id; `{id}-reverse` when not given.
    #[serde(default)]
    pub reverse_task_id: Option<String>,
}

fn default_timeout() -> u64 {
    300
}

impl Default for SwitchoverRequest {
    fn default() -> Self {
        Self {
            timeout_seconds: default_timeout(),
            verify: false,
            reverse_task_id: None,
        }
    }
}

/// Where a switchover stands, kept in the task's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SwitchoverRecord {
    /// When the fence was set (Unix ms).
    pub started_ms: u64,
    pub reverse_task: String,
    /// Once the target holds everything and the task is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<Drained>,
    /// Once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<SwitchoverReport>,
}

/// What a switchover did, and the proof that nothing was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SwitchoverReport {
    /// The new primary's cluster (the task's target) and the old one's.
    pub new_primary: String,
    pub old_primary: String,
    /// The task B to A, running.
    pub reverse_task: String,
    /// A timestamp of the old primary allocated once its fence refused writes: every write
    /// it accepted is before it.
    pub fence_ts: SourceTime,
    /// The task's consistency point when it was paused: past `fence_ts`, so the new primary
    /// holds every write the old one accepted (RPO 0).
    pub consistent_through: SourceTime,
    /// The newest insert or delete of the old primary the task staged while it ran: not after
    /// `fence_ts`, so no write passed the fence.
    pub newest_write: Option<SourceTime>,
    /// From the fence set to the reverse task running, in milliseconds: how long no cluster
    /// took writes.
    pub write_outage_ms: u64,
    /// With `verify`: whether the collections were equal row by row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_equal: Option<bool>,
    /// When it ended, RFC 3339 UTC.
    pub finished: String,
}

impl Supervisor {
    /// Switches the task's source and target over (see the module): answers the report.
    pub async fn switchover(
        self: &Arc<Self>,
        id: &str,
        request: &SwitchoverRequest,
    ) -> Result<SwitchoverReport, TaskError> {
        self.here(id)?;
        let turn = self.turn(id).await;
        let spec = self.stored(id)?;
        if let Some(report) = spec.switchover.as_ref().and_then(|s| s.report.clone()) {
            return Ok(report);
        }
        let (old_primary, new_primary) = self.switch_clusters(&spec)?;
        let paused_by_us = spec.state == TaskState::Paused
            && spec
                .switchover
                .as_ref()
                .is_some_and(|s| s.drained.is_some());
        let record = match spec.switchover.as_deref() {
            Some(record) if paused_by_us => record.clone(),
            _ => {
                let reverse_id = request
                    .reverse_task_id
                    .clone()
                    .unwrap_or_else(|| format!("{id}-reverse"));
                self.drain_and_pause(&spec, request, reverse_id, &old_primary)
                    .await?
            }
        };
        drop(turn);
        let reverse = self.reverse_spec(&spec, &record.reverse_task, &old_primary, &new_primary);
        match self.create(reverse).await? {
            Created::New(_) | Created::Existing(_) => {}
        }
        self.meta_of(&old_primary)
            .await?
            .set_write_fence(false)
            .await?;
        let drained = record.drained.unwrap_or_default();
        let report = SwitchoverReport {
            new_primary,
            old_primary,
            reverse_task: record.reverse_task.clone(),
            fence_ts: SourceTime::at(drained.fence_ts),
            consistent_through: SourceTime::at(drained.consistent),
            newest_write: (drained.newest_write > 0).then(|| SourceTime::at(drained.newest_write)),
            write_outage_ms: now_ms().saturating_sub(record.started_ms),
            verified_equal: drained.verified_equal,
            finished: now_utc(),
        };
        let _turn = self.turn(id).await;
        let mut done = self.stored(id)?;
        let Some(record) = done.switchover.as_mut() else {
            return Err(self.switch_failed(id, "its record lost the switchover".into()));
        };
        // A repeated call that finished meanwhile wrote the report: that one stands.
        if let Some(first) = &record.report {
            return Ok(first.clone());
        }
        record.report = Some(report.clone());
        self.save(&done)?;
        info!(task = id, reverse = %report.reverse_task, outage_ms = report.write_outage_ms,
            "switched over");
        Ok(report)
    }

    /// Steps 1 to 4, then the pause: answers the record with its proof. A failure before the
    /// pause lifts the fence (`call_off`).
    async fn drain_and_pause(
        self: &Arc<Self>,
        spec: &TaskSpec,
        request: &SwitchoverRequest,
        reverse_task: String,
        old_primary: &str,
    ) -> Result<SwitchoverRecord, TaskError> {
        let id = &spec.task_id;
        if spec.state != TaskState::Running {
            return Err(
                self.switch_failed(id, format!("the task is {:?}, not Running", spec.state))
            );
        }
        let mut record = SwitchoverRecord {
            started_ms: now_ms(),
            reverse_task,
            drained: None,
            report: None,
        };
        let mut saved = spec.clone();
        saved.switchover = Some(Box::new(record.clone()));
        self.save(&saved)?;
        let drained = match self.fence_and_drain(spec, request).await {
            Ok(drained) => drained,
            Err(reason) => return Err(self.call_off(spec, old_primary, reason).await),
        };
        // Paused: its readers stop; nothing more comes from the source, which is fenced.
        let me = self.clone();
        let task = id.clone();
        tokio::task::spawn_blocking(move || me.stop(&task))
            .await
            .map_err(|e| TaskError::Internal(e.to_string()))?;
        record.drained = Some(drained);
        let mut paused = self.stored(id)?;
        paused.state = TaskState::Paused;
        paused.reason = Some(format!(
            "switched over: task {} replicates the other way",
            record.reverse_task
        ));
        paused.switchover = Some(Box::new(record.clone()));
        self.save(&paused)?;
        crate::failpoint::hit("switchover-after-pause");
        Ok(record)
    }

    /// The clusters the task goes between, by name: (source, target).
    fn switch_clusters(&self, spec: &TaskSpec) -> Result<(String, String), TaskError> {
        let target = spec
            .target
            .cluster
            .clone()
            .or_else(|| self.config.cluster_at(&spec.target.uri).map(str::to_owned))
            .ok_or_else(|| {
                self.switch_failed(
                    &spec.task_id,
                    format!(
                        "its target {} is no cluster of the config: name it in [clusters.NAME] \
                         (with its etcd and message queue) so that a task can read it",
                        spec.target.uri
                    ),
                )
            })?;
        if !spec.name_mapping.is_empty() {
            return Err(self.switch_failed(
                &spec.task_id,
                "a task with name_mapping cannot be reversed yet".into(),
            ));
        }
        self.cluster(&target)?;
        Ok((spec.source_cluster.clone(), target))
    }

    fn switch_failed(&self, id: &str, reason: String) -> TaskError {
        TaskError::Switchover {
            task: id.to_owned(),
            reason,
        }
    }

    /// Steps 1 to 4: answers the proof, or why it failed.
    async fn fence_and_drain(
        self: &Arc<Self>,
        spec: &TaskSpec,
        request: &SwitchoverRequest,
    ) -> Result<Drained, String> {
        let id = &spec.task_id;
        let deadline = Instant::now() + Duration::from_secs(request.timeout_seconds);
        let meta = self
            .meta_of(&spec.source_cluster)
            .await
            .map_err(|e| e.to_string())?;
        meta.set_write_fence(true)
            .await
            .map_err(|e| e.to_string())?;
        warn!(task = %id, cluster = %spec.source_cluster, "switchover: writes fenced on the source");
        let collections: Vec<CollectionRef> = meta
            .collections()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|c| spec.scope().contains(&c.db_name, &c.name))
            .map(|c| CollectionRef {
                id: c.id,
                db_name: c.db_name,
                name: c.name,
            })
            .collect();
        let source = self.source_rows(spec).map_err(|e| e.to_string())?;
        for c in &collections {
            while !fence::fenced(&source.client, c)
                .await
                .map_err(|e| e.to_string())?
            {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "the source still takes writes to {}.{} after {} s",
                        c.db_name, c.name, request.timeout_seconds
                    ));
                }
                tokio::time::sleep(DRAIN_CHECK).await;
            }
        }
        let fence_ts = source
            .timestamp()
            .await
            .map_err(|e| format!("source timestamp: {e}"))?;
        self.drained_through(id, fence_ts, deadline).await?;
        let verified = if request.verify {
            let report = self
                .verify(id, &Limits::default())
                .await
                .map_err(|e| e.to_string())?;
            if !(report.equal && report.complete) {
                return Err("verify found the target different from the source".into());
            }
            Some(true)
        } else {
            None
        };
        let drained_ts = source
            .timestamp()
            .await
            .map_err(|e| format!("source timestamp: {e}"))?;
        let consistent = self.drained_through(id, drained_ts, deadline).await?;
        let newest_write = self.health(id).newest_data_staged();
        if newest_write > fence_ts {
            return Err(format!(
                "the source took a write after its fence (stamped {}, the fence at {})",
                hybrid_time(newest_write),
                hybrid_time(fence_ts)
            ));
        }
        Ok(Drained {
            fence_ts,
            consistent,
            newest_write,
            verified_equal: verified,
        })
    }

    /// Waits until the task's consistency point passes `ts`; answers the point.
    async fn drained_through(&self, id: &str, ts: u64, deadline: Instant) -> Result<u64, String> {
        loop {
            let point = self.consistent_through(id).map_err(|e| e.to_string())?;
            match point {
                Some(point) if point.timestamp >= ts => return Ok(point.timestamp),
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "the target did not catch up with the source in time (consistent through {}, needed {})",
                        point.map_or("nothing yet".into(), |p| p.time),
                        hybrid_time(ts)
                    ));
                }
                _ => tokio::time::sleep(DRAIN_CHECK).await,
            }
        }
    }

    /// Lifts the fence and forgets the switchover: the task goes on as before. Answers why.
    async fn call_off(&self, spec: &TaskSpec, source: &str, reason: String) -> TaskError {
        warn!(task = %spec.task_id, %reason, "switchover called off: the fence is lifted");
        let lifted = match self.meta_of(source).await {
            Ok(meta) => meta.set_write_fence(false).await.map_err(|e| e.to_string()),
            Err(err) => Err(err.to_string()),
        };
        let forgotten = self.stored(&spec.task_id).and_then(|mut record| {
            record.switchover = None;
            self.save(&record)
        });
        let mut reason = format!("called off, everything as it was: {reason}");
        if let Err(err) = lifted {
            reason += &format!(
                ". The source's fence could not be lifted ({err}): repeat the switchover, or lift it by hand"
            );
        }
        if let Err(err) = forgotten {
            reason += &format!(". The task still shows the switchover ({err})");
        }
        self.switch_failed(&spec.task_id, reason)
    }

    async fn meta_of(&self, cluster: &str) -> Result<crate::source::meta::SourceMeta, TaskError> {
        Ok(self.cluster(cluster)?.meta().await?)
    }

    /// The reverse task: the same collections, from the target's cluster to the source's.
    fn reverse_spec(&self, spec: &TaskSpec, id: &str, source: &str, target: &str) -> TaskSpec {
        TaskSpec {
            task_id: id.to_owned(),
            source_cluster: target.to_owned(),
            target: TargetSpec {
                cluster: Some(source.to_owned()),
                ..TargetSpec::at(String::new())
            },
            state: TaskState::Initial,
            reason: None,
            poison: None,
            skip_approved: None,
            failover: None,
            switchover: None,
            owner: None,
            positions: Default::default(),
            start: Default::default(),
            ..spec.clone()
        }
    }
}

/// What the drain proved (hybrid timestamps of the source; see [`SwitchoverReport`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Drained {
    pub fence_ts: u64,
    pub consistent: u64,
    pub newest_write: u64,
    pub verified_equal: Option<bool>,
}

fn now_utc() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
