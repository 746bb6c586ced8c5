//! Each configured cluster's role, as the tasks make it: what `/v1/status`, the status page and
//! `/metrics` show, with the last failover and switchover.

use serde::Serialize;

use super::failover::FailoverReport;
use super::switchover::SwitchoverReport;
use super::{Supervisor, TaskError, TaskSpec, TaskState};

/// What a cluster is to the appliance's tasks now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRole {
    /// No task reads or writes it.
    None,
    /// The source of a task that failed over: given up for lost.
    Lost,
    /// Takes the writes: the source of a running task, or the target of one that failed over.
    Primary,
    /// A copy: the target of a running task.
    Standby,
    /// Its writes are fenced by a switchover under way.
    Fenced,
}

impl ClusterRole {
    /// As `/metrics` and the API name it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterRole::None => "none",
            ClusterRole::Lost => "lost",
            ClusterRole::Primary => "primary",
            ClusterRole::Standby => "standby",
            ClusterRole::Fenced => "fenced",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    pub name: String,
    pub role: ClusterRole,
    /// The task that makes it so, and how.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LastFailover {
    pub task: String,
    pub report: FailoverReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LastSwitchover {
    pub task: String,
    pub report: SwitchoverReport,
}

impl Supervisor {
    /// Every configured cluster with its role. Where tasks make a cluster more than one thing,
    /// the strongest holds: fenced, then standby, primary, lost.
    pub fn cluster_roles(&self) -> Result<Vec<ClusterView>, TaskError> {
        let tasks = self.tasks()?;
        Ok(self
            .config
            .clusters()
            .map(|(name, _)| {
                let (role, why) = tasks
                    .iter()
                    .filter_map(|task| self.role_by(task, name))
                    .max_by_key(|(role, _)| *role)
                    .unwrap_or((ClusterRole::None, "no task reads or writes it".into()));
                ClusterView {
                    name: name.to_owned(),
                    role,
                    why,
                }
            })
            .collect())
    }

    /// What `task` makes `cluster`, if anything.
    fn role_by(&self, task: &TaskSpec, cluster: &str) -> Option<(ClusterRole, String)> {
        let id = &task.task_id;
        let reads = task.source_cluster == cluster;
        let target = task
            .target
            .cluster
            .clone()
            .or_else(|| self.config.cluster_at(&task.target.uri).map(str::to_owned));
        let writes = target.as_deref() == Some(cluster);
        let switching = task.switchover.as_ref().is_some_and(|s| s.report.is_none());
        let running = matches!(task.state, TaskState::Running | TaskState::Initial);
        let failed_over = matches!(task.state, TaskState::FailingOver | TaskState::FailedOver);
        match () {
            _ if reads && switching => Some((
                ClusterRole::Fenced,
                format!("switchover of task {id} under way"),
            )),
            _ if writes && running => {
                Some((ClusterRole::Standby, format!("task {id} writes to it")))
            }
            _ if reads && running => Some((ClusterRole::Primary, format!("task {id} reads it"))),
            _ if writes && failed_over => {
                Some((ClusterRole::Primary, format!("task {id} failed over to it")))
            }
            _ if reads && failed_over => {
                Some((ClusterRole::Lost, format!("task {id} failed over from it")))
            }
            _ => None,
        }
    }

    /// The latest failover and switchover of any task, by when they ended.
    pub fn last_events(&self) -> Result<(Option<LastFailover>, Option<LastSwitchover>), TaskError> {
        let tasks = self.tasks()?;
        let failover = tasks
            .iter()
            .filter_map(|t| t.failover.as_deref().map(|r| (t, r)))
            .max_by(|a, b| a.1.finished.cmp(&b.1.finished))
            .map(|(t, r)| LastFailover {
                task: t.task_id.clone(),
                report: r.clone(),
            });
        let switchover = tasks
            .iter()
            .filter_map(|t| t.switchover.as_ref()?.report.as_ref().map(|r| (t, r)))
            .max_by(|a, b| a.1.finished.cmp(&b.1.finished))
            .map(|(t, r)| LastSwitchover {
                task: t.task_id.clone(),
                report: r.clone(),
            });
        Ok((failover, switchover))
    }
}
