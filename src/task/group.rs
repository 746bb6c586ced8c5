//! A task's owner in a group of appliances (`[group]`): which member runs each task, and how a
//! task moves between members with nothing doubled and nothing skipped.
//!
//! One loop per member ([`Supervisor::join_group`]) wakes on every change under the group's
//! prefix and every fifth of a lease, and makes this member's share true:
//! - Without a valid lease it runs nothing: its tasks stop before the lease can expire
//!   (`group` states the clock assumption).
//! - A task that needs a runner (Running, FailingOver) and has no owner is claimed by the
//!   member it is placed on (`placed_on`), which empties its own journal of the task and
//!   starts it from the task's checkpoint, every change up to a minute past the takeover
//!   applied as a replay (inserts as upserts): the previous owner may have applied any of them.
//! - An owner publishes its tasks' records and checkpoints; it hands a task placed on another
//!   member over (stops it, writes its checkpoint, releases it), and releases one that needs no
//!   runner.
//! - A task this member runs but does not own (its lease lapsed) is stopped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{error, info, warn};

use super::{Supervisor, TaskError, TaskSpec, TaskState};
use crate::group::{Group, Member, placed_on};
use crate::journal::Checkpoint;

/// How far past a takeover its changes are applied as replays: beyond any clock difference
/// between the appliance and the source's timestamps.
const REPLAY_MARGIN: Duration = Duration::from_secs(60);

/// A group as `/v1/status` shows it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct GroupView {
    /// This member's name.
    pub member: String,
    /// The live members, with their last heartbeat.
    pub members: Vec<Member>,
    /// Each owned task's owner, by task id.
    pub owners: std::collections::BTreeMap<String, String>,
    /// Tasks this member took over since it started.
    pub takeovers: u64,
}

/// What the owner loop keeps between passes.
#[derive(Default)]
struct Passes {
    /// The checkpoint each owned task published last.
    published: HashMap<String, Checkpoint>,
}

impl Supervisor {
    /// Makes this appliance a member of `group`: it runs the tasks the group places on it.
    pub fn join_group(self: &Arc<Self>, group: Arc<Group>) {
        if self.group.set(group.clone()).is_err() {
            return;
        }
        group.run();
        let me = self.clone();
        let watched = group.clone();
        tokio::spawn(async move { me.stop_when_the_lease_lapses(&watched).await });
        let me = self.clone();
        tokio::spawn(async move {
            let changed = group.changed();
            let mut passes = Passes::default();
            loop {
                if let Err(err) = me.own_share(&group, &mut passes).await {
                    warn!(%err, "group: this pass failed; trying again");
                }
                let next = group.lease().map_or(group.ttl / 5, |l| {
                    l.valid_until
                        .saturating_duration_since(std::time::Instant::now())
                        .min(group.ttl / 5)
                });
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(next) => {}
                }
            }
        });
    }

    /// Stops every task of this member once its lease is no longer renewed, by
    /// `Lease::valid_until`: before etcd can expire it and let another member start them.
    /// Apart from the owner loop, whose etcd calls may hang as long as the lease's margin.
    async fn stop_when_the_lease_lapses(self: &Arc<Self>, group: &Group) {
        let mut updates = group.lease_updates();
        let mut held = None;
        loop {
            let lease = *updates.borrow_and_update();
            let id = lease.map(|l| l.id);
            if held.is_some() && id != held {
                // Claims made under the lease before are not this one's: they expire with it.
                for id in self.running_ids() {
                    warn!(
                        task = id,
                        "group: a new lease: the task stops until it is claimed again"
                    );
                    self.stop_now(&id).await;
                }
            }
            held = id;
            let lapse = match lease {
                Some(lease) => tokio::time::sleep_until(lease.valid_until.into()),
                None => tokio::time::sleep(Duration::from_secs(3600)),
            };
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = lapse => {
                    for id in self.running_ids() {
                        warn!(task = id, "group: the lease was not renewed in time: the task \
                            stops before it can expire");
                        self.stop_now(&id).await;
                    }
                    // Until the lease is renewed or a new one granted.
                    if updates.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// After `shutdown`: this member's tasks handed over at once, each with its checkpoint,
    /// rather than when its lease expires.
    pub async fn leave_group(&self) {
        let Some(group) = self.group() else {
            return;
        };
        let owned: Vec<String> = {
            let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
            owners
                .iter()
                .filter(|(_, m)| m.name == group.name)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in owned {
            let checkpoint = self.journal.checkpoint(&id, None).ok().flatten();
            let bytes = checkpoint.and_then(|c| serde_json::to_vec(&c).ok());
            let published = match &bytes {
                Some(bytes) => group.put_checkpoint(&id, bytes).await,
                // Its last published checkpoint stands.
                None => Ok(()),
            };
            match published.and(group.release(&id).await) {
                Ok(()) => info!(task = id, "group: handed over as this member leaves"),
                Err(err) => warn!(task = id, %err, "group: not released; its lease will expire"),
            }
        }
        if let Err(err) = group.leave().await {
            warn!(%err, "group: the lease is not revoked; it will expire");
        }
    }

    /// Wakes the owner loop, which publishes the checkpoints of this member's tasks: after a
    /// DDL, so that the next owner replays as little DDL as it can.
    pub(super) fn checkpoint_soon(&self) {
        if let Some(group) = self.group() {
            group.changed().notify_one();
        }
    }

    pub(super) fn group(&self) -> Option<&Arc<Group>> {
        self.group.get()
    }

    /// The member that owns the task, if another than this one.
    pub fn owned_elsewhere(&self, id: &str) -> Option<Member> {
        let group = self.group()?;
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        let owner = owners.get(id)?;
        (owner.name != group.name).then(|| owner.clone())
    }

    /// Whether this member owns the task (as the last pass saw, or since it claimed it).
    pub(super) fn owns(&self, id: &str) -> bool {
        let Some(group) = self.group() else {
            return true;
        };
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners.get(id).is_some_and(|o| o.name == group.name)
    }

    /// Records a claim this member just made, before the next pass reads it back.
    pub(super) fn note_owner(&self, group: &Group, id: &str) {
        let me = Member {
            name: group.name.clone(),
            url: group.url.clone(),
            heartbeat_ms: 0,
        };
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners.insert(id.to_owned(), me);
    }

    /// Refuses a lifecycle call for a task another member owns: its owner takes it.
    pub(super) fn here(&self, id: &str) -> Result<(), TaskError> {
        match self.owned_elsewhere(id) {
            Some(_) => Err(self.owned_by_another(id)),
            None => Ok(()),
        }
    }

    pub(super) fn owner_of(&self, id: &str) -> Option<String> {
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        owners.get(id).map(|m| m.name.clone())
    }

    pub(super) fn owned_by_another(&self, id: &str) -> TaskError {
        let owner = self.owned_elsewhere(id);
        TaskError::OwnedElsewhere {
            task: id.to_owned(),
            owner: owner
                .as_ref()
                .map_or_else(|| "another".into(), |o| o.name.clone()),
            url: owner.map(|o| o.url).unwrap_or_default(),
        }
    }

    /// In a group, a task this member does not own has its record written to the group by
    /// whoever changes it: answers whether it was (from a blocking thread only).
    pub(super) fn shared_unowned(&self, spec: &TaskSpec) -> Result<bool, TaskError> {
        let Some(group) = self.group() else {
            return Ok(false);
        };
        if self.owns(&spec.task_id) {
            return Ok(false);
        }
        let record = super::record(spec)?;
        self.runtime
            .block_on(group.put_task(&spec.task_id, &record))?;
        Ok(true)
    }

    pub fn group_view(&self) -> Option<GroupView> {
        let group = self.group()?;
        let owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        Some(GroupView {
            member: group.name.clone(),
            members: self.members(),
            owners: owners
                .iter()
                .map(|(id, m)| (id.clone(), m.name.clone()))
                .collect(),
            takeovers: self.takeovers.load(Ordering::Relaxed),
        })
    }

    /// The group's members as the last pass saw them.
    pub fn members(&self) -> Vec<Member> {
        self.members
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn own_share(
        self: &Arc<Self>,
        group: &Group,
        passes: &mut Passes,
    ) -> Result<(), TaskError> {
        if self.leaving.load(Ordering::Relaxed) {
            return Ok(());
        }
        if group.lease().is_none() {
            for id in self.running_ids() {
                warn!(
                    task = id,
                    "group: no lease: the task stops before it can expire"
                );
                self.stop_now(&id).await;
            }
            return Ok(());
        }
        // Before the owners are read: a task started later was claimed before they were.
        let running = self.running_ids();
        let members = group.members().await?;
        let owners: HashMap<String, String> = group.owners().await?.into_iter().collect();
        let records: HashMap<String, Vec<u8>> = group.tasks().await?.into_iter().collect();
        self.remember(&members, &owners);
        let mine = |id: &str| owners.get(id).is_some_and(|o| *o == group.name);

        for id in running {
            if !mine(&id) {
                warn!(
                    task = id,
                    "group: another member owns the task now: stopped here"
                );
                self.stop_now(&id).await;
            }
        }
        let local: HashMap<String, Vec<u8>> = self.journal.tasks()?.into_iter().collect();
        self.mirror(&records, &local, &mine)?;
        // A record of this member's that the group lacks (its create could not write it), and
        // a claim with no task (its create failed).
        for (id, record) in &local {
            if mine(id) && !records.contains_key(id) {
                group.put_task(id, record).await?;
            }
        }
        for id in owners.keys() {
            let orphan = !records.contains_key(id) && !local.contains_key(id);
            if mine(id) && orphan && !self.is_creating(id) {
                group.release(id).await?;
            }
        }
        for (id, record) in &records {
            let Ok(spec) = serde_json::from_slice::<TaskSpec>(record) else {
                continue;
            };
            let runs = matches!(spec.state, TaskState::Running | TaskState::FailingOver);
            let placed = placed_on(id, &members).map(|m| m.name.as_str());
            // One task's trouble holds up no other's.
            let done = if mine(id) {
                self.as_owner(group, passes, &spec.task_id, record, runs, placed)
                    .await
            } else if runs && !owners.contains_key(id) && placed == Some(group.name.as_str()) {
                self.take_over(group, spec).await
            } else {
                Ok(())
            };
            if let Err(err) = done {
                warn!(task = id, %err, "group: this task's turn failed; trying again");
            }
        }
        Ok(())
    }

    /// Keeps what the pass saw for the API.
    fn remember(&self, members: &[Member], owners: &HashMap<String, String>) {
        let by_name: HashMap<&str, &Member> =
            members.iter().map(|m| (m.name.as_str(), m)).collect();
        let owned = owners.iter().map(|(id, name)| {
            let member = by_name.get(name.as_str()).map_or_else(
                || Member {
                    name: name.clone(),
                    url: String::new(),
                    heartbeat_ms: 0,
                },
                |m| (*m).clone(),
            );
            (id.clone(), member)
        });
        *self.owners.lock().unwrap_or_else(PoisonError::into_inner) = owned.collect();
        *self.members.lock().unwrap_or_else(PoisonError::into_inner) = members.to_vec();
    }

    /// The records of tasks this member does not own, as the group has them; its own tasks'
    /// records are its journal's, published by [`Supervisor::as_owner`].
    fn mirror(
        &self,
        records: &HashMap<String, Vec<u8>>,
        local: &HashMap<String, Vec<u8>>,
        mine: &impl Fn(&str) -> bool,
    ) -> Result<(), TaskError> {
        for (id, record) in records {
            if !mine(id) && local.get(id) != Some(record) {
                self.journal.put_task(id, record)?;
            }
        }
        for id in local.keys() {
            let gone = !records.contains_key(id) && !mine(id);
            if gone && !self.is_creating(id) && !self.is_running(id) {
                self.journal.delete_task(id)?;
            }
        }
        Ok(())
    }

    /// Whether a create of the task is under way here (its record not saved or shared yet).
    fn is_creating(&self, id: &str) -> bool {
        self.creating
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    /// An owned task: its record and checkpoint published, or the task handed over or
    /// released.
    async fn as_owner(
        self: &Arc<Self>,
        group: &Group,
        passes: &mut Passes,
        id: &str,
        shared: &[u8],
        runs: bool,
        placed: Option<&str>,
    ) -> Result<(), TaskError> {
        let Some(local) = self.journal.task(id)? else {
            return Ok(());
        };
        if shared != local.as_slice() {
            group.put_task(id, &local).await?;
        }
        let spec: TaskSpec = serde_json::from_slice(&local)
            .map_err(|e| TaskError::Corrupt(id.to_owned(), e.to_string()))?;
        let runs_here = matches!(spec.state, TaskState::Running | TaskState::FailingOver);
        let leaves = runs && placed.is_some_and(|p| p != group.name);
        if runs_here && leaves && passes.published.contains_key(id) {
            info!(task = id, to = ?placed, "group: handing the task over");
            self.stop_now(id).await;
        } else if runs_here {
            if !self.is_running(id) {
                // Stopped when the lease was late, and still this member's: its journal is
                // the task's latest state.
                info!(
                    task = id,
                    "group: the lease holds again: the task starts again"
                );
                self.start_owned(spec).await?;
            }
            self.publish_checkpoint(group, passes, id).await?;
            return Ok(());
        }
        // Stopped: its final checkpoint, then it is free.
        self.publish_checkpoint(group, passes, id).await?;
        group.release(id).await?;
        passes.published.remove(id);
        Ok(())
    }

    async fn publish_checkpoint(
        &self,
        group: &Group,
        passes: &mut Passes,
        id: &str,
    ) -> Result<(), TaskError> {
        let previous = passes.published.get(id);
        let Some(taken) = self.journal.checkpoint(id, previous)? else {
            return Ok(());
        };
        if previous != Some(&taken) {
            let bytes = serde_json::to_vec(&taken)
                .map_err(|e| TaskError::Internal(format!("checkpoint of {id}: {e}")))?;
            group.put_checkpoint(id, &bytes).await?;
            passes.published.insert(id.to_owned(), taken);
        }
        Ok(())
    }

    /// Claims a task with no owner and starts it from its checkpoint.
    async fn take_over(self: &Arc<Self>, group: &Group, spec: TaskSpec) -> Result<(), TaskError> {
        let id = spec.task_id.clone();
        let Some(claimed_at) = group.claim(&id).await? else {
            return Ok(());
        };
        self.note_owner(group, &id);
        let checkpoint = match group.checkpoint(&id).await? {
            Some(bytes) => serde_json::from_slice::<Checkpoint>(&bytes)
                .map_err(|e| TaskError::Corrupt(id.clone(), format!("its checkpoint: {e}")))?,
            None => {
                let reason = "taken over with no checkpoint: its owner was lost before it \
                              applied its start. Delete it and create it again";
                error!(task = id, reason, "group: cannot carry the task on");
                let mut failed = spec.clone();
                failed.state = TaskState::Failed;
                failed.reason = Some(reason.into());
                self.save(&failed)?;
                return Ok(());
            }
        };
        let replay_through = {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            (ms + REPLAY_MARGIN.as_millis() as u64) << 18
        };
        let me = self.clone();
        tokio::task::spawn_blocking(move || -> Result<(), TaskError> {
            let _turn = me.turn_blocking(&spec.task_id);
            me.stop(&spec.task_id);
            // What an earlier ownership left here is older than the checkpoint.
            me.journal.delete_task(&spec.task_id)?;
            let run = me
                .journal
                .begin_run_at(&spec.task_id, claimed_at.max(0) as u64)?;
            me.journal.restore(&run, &checkpoint, replay_through)?;
            me.save(&spec)?;
            me.takeovers.fetch_add(1, Ordering::Relaxed);
            warn!(
                task = spec.task_id,
                "group: took the task over from its checkpoint"
            );
            me.start_owned_blocking(spec)
        })
        .await
        .map_err(|e| TaskError::Internal(e.to_string()))?
    }

    fn start_owned_blocking(self: &Arc<Self>, spec: TaskSpec) -> Result<(), TaskError> {
        match spec.state {
            TaskState::FailingOver => self.start_failover(spec),
            _ => self.launch(spec),
        }
    }

    async fn start_owned(self: &Arc<Self>, spec: TaskSpec) -> Result<(), TaskError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.start_owned_blocking(spec))
            .await
            .map_err(|e| TaskError::Internal(e.to_string()))?
    }

    fn running_ids(&self) -> Vec<String> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    async fn stop_now(self: &Arc<Self>, id: &str) {
        let me = self.clone();
        let id = id.to_owned();
        let _ = tokio::task::spawn_blocking(move || me.stop(&id)).await;
    }
}
