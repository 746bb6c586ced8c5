//! What keeps lifecycle calls from stepping on each other: one call at a time per task id
//! ([`Turn`]), and a claim on a target and scope for each create under way ([`Claim`]).
//!
//! A retrying client repeats and races its calls, with or without a task id. Twenty creates
//! of one id take turns: the first creates it, the others find it. Twenty creates without an
//! id have twenty ids, so turns do not order them: each claims its target and scope before it
//! seeds, against the saved tasks and every other create under way, under one lock. The first
//! claim wins and the others get the 409 that names it, whatever the timing.
//!
//! A claim also names the clusters a task goes between: a task in the opposite direction
//! over some of the same collections (its reverse twin) is refused while the other runs,
//! since each would send the other's writes back.
//!
//! Both are bounded by the tasks that exist: a turn forgets the lock of an id that has no task
//! once nobody else waits on it (an unknown id, a failed create, a delete), and a claim ends
//! with its create, by which time a created task's record is saved.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{Supervisor, TaskError, TaskSpec, TaskState};
use crate::config::Config;
use crate::model::Scope;

/// One lifecycle call's turn at a task id.
pub(super) struct Turn<'a> {
    supervisor: &'a Supervisor,
    id: String,
    held: Option<OwnedMutexGuard<()>>,
}

impl Supervisor {
    fn turn_lock(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = self
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.entry(id.to_owned()).or_default().clone()
    }

    /// Waits for the other lifecycle calls of `id` (create, pause, resume, skip, delete).
    pub(super) async fn turn(&self, id: &str) -> Turn<'_> {
        let held = self.turn_lock(id).lock_owned().await;
        Turn {
            supervisor: self,
            id: id.to_owned(),
            held: Some(held),
        }
    }

    /// As [`Supervisor::turn`], from a blocking thread only (the API runs pause, resume, skip
    /// and delete with `spawn_blocking`: they wait for a run's threads to end).
    pub(super) fn turn_blocking(&self, id: &str) -> Turn<'_> {
        let held = self.turn_lock(id).blocking_lock_owned();
        Turn {
            supervisor: self,
            id: id.to_owned(),
            held: Some(held),
        }
    }

    /// The number of task ids with a lifecycle lock: the tasks, and the calls under way.
    #[cfg(test)]
    pub(super) fn turn_locks(&self) -> usize {
        self.lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Claims `spec`'s target and scope for its create, until the claim is dropped: refused
    /// with [`TaskError::Overlaps`] while a saved task or another create under way writes some
    /// of the same collections to the same target.
    pub(super) fn claim(&self, spec: &TaskSpec) -> Result<ClaimHeld<'_>, TaskError> {
        let claim = Claim::of(spec, &self.config);
        let mut creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
        let others = self.claims_but(&spec.task_id, &creating)?;
        if let Some((existing, _)) = others.iter().find(|(_, other)| other.overlaps(&claim)) {
            return Err(TaskError::Overlaps {
                existing: existing.clone(),
                target: spec.target.uri.clone(),
            });
        }
        Self::no_reverse_twin(&claim, &others)?;
        creating.insert(spec.task_id.clone(), claim);
        Ok(ClaimHeld {
            supervisor: self,
            id: spec.task_id.clone(),
        })
    }
}

impl Supervisor {
    /// The claims of every task but `id`: the saved ones, and the creates under way. Read
    /// while `creating` is locked: a create saves its record before its claim ends.
    fn claims_but(
        &self,
        id: &str,
        creating: &HashMap<String, Claim>,
    ) -> Result<Vec<(String, Claim)>, TaskError> {
        Ok(self
            .tasks()?
            .iter()
            .map(|task| (task.task_id.clone(), Claim::of(task, &self.config)))
            .chain(creating.iter().map(|(id, c)| (id.clone(), c.clone())))
            .filter(|(other, _)| other != id)
            .collect())
    }

    /// Refused while a task in the opposite direction over some of the same collections
    /// runs (or is being created): each would send the other's writes back.
    pub(super) fn check_no_reverse_twin(&self, spec: &TaskSpec) -> Result<(), TaskError> {
        let creating = self.creating.lock().unwrap_or_else(PoisonError::into_inner);
        let others = self.claims_but(&spec.task_id, &creating)?;
        Self::no_reverse_twin(&Claim::of(spec, &self.config), &others)
    }

    fn no_reverse_twin(claim: &Claim, others: &[(String, Claim)]) -> Result<(), TaskError> {
        match others.iter().find(|(_, other)| other.reverses(claim)) {
            Some((existing, other)) => Err(TaskError::ReverseTwin {
                existing: existing.clone(),
                from: other.source.clone(),
                to: claim.source.clone(),
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut locks = self
            .supervisor
            .lifecycle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Two holders, the map and this turn, means nobody else waits: new waiters clone it
        // under the map's lock, held here.
        let unused = locks
            .get(&self.id)
            .is_some_and(|lock| Arc::strong_count(lock) == 2);
        if unused && matches!(self.supervisor.journal.task(&self.id), Ok(None)) {
            locks.remove(&self.id);
        }
        drop(self.held.take());
    }
}

/// The collections a task writes, and where; and the clusters it goes between.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    target: String,
    scope: Scope,
    /// The cluster read.
    source: String,
    /// The cluster written to: named by the task, or the one whose API is its target uri.
    target_cluster: Option<String>,
    /// Running, or being created: what a reverse twin is refused against.
    active: bool,
    /// It never writes again: failed over, or switched over (its reverse task took over).
    retired: bool,
}

impl Claim {
    fn of(spec: &TaskSpec, config: &Config) -> Self {
        let target_cluster = spec
            .target
            .cluster
            .clone()
            .or_else(|| config.cluster_at(&spec.target.uri).map(str::to_owned));
        Self {
            target: spec.target.uri.trim_end_matches('/').to_owned(),
            scope: spec.scope(),
            source: spec.source_cluster.clone(),
            target_cluster,
            active: matches!(spec.state, TaskState::Running | TaskState::Initial),
            retired: spec.retired(),
        }
    }

    fn overlaps(&self, other: &Claim) -> bool {
        !self.retired
            && !other.retired
            && self.target == other.target
            && self.scope.overlaps(&other.scope)
    }

    /// Whether this active task writes `other`'s source from `other`'s target: the reverse
    /// direction over some of the same collections.
    fn reverses(&self, other: &Claim) -> bool {
        self.active
            && self.target_cluster.as_deref() == Some(other.source.as_str())
            && other.target_cluster.as_deref() == Some(self.source.as_str())
            && self.scope.overlaps(&other.scope)
    }
}

/// A create's claim, given back when its create ends.
pub(super) struct ClaimHeld<'a> {
    supervisor: &'a Supervisor,
    id: String,
}

impl Drop for ClaimHeld<'_> {
    fn drop(&mut self) {
        self.supervisor
            .creating
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}
