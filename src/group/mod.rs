//! A group of appliances sharing their tasks through etcd (`[group]` in the config): what each
//! member keeps there, and its lease.
//!
//! Keys, under the group's prefix:
//! - `members/NAME`: a member's API URL and heartbeat, on its lease (gone when it is).
//! - `tasks/ID`: a task's record, written by its owner (or by whoever changed a task without
//!   one).
//! - `owners/ID`: the member that runs the task, on that member's lease. Claimed only while
//!   the key is absent: a new owner starts only once the previous one's lease has expired or
//!   it released the task.
//! - `checkpoints/ID`: where the task's next owner carries it on (`journal::Checkpoint`).
//!
//! The one clock assumption (see ARCHITECTURE.md, "Several appliances"): between two of this
//! member's keep-alives, its clock runs at no less than two thirds of etcd's. A keep-alive
//! sent at `t` keeps the lease until at least `t + ttl` by etcd's clock; the member holds
//! itself an owner only until `t + ttl * 2/3` by its own ([`Lease::valid_until`]), and the
//! owner of a task stops it by then. This layer knows no task: it stores their bytes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, TlsOptions,
    Txn, TxnOp, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::model::CaFile;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GroupConfig {
    /// The etcd the members share: the source's will do.
    pub etcd_endpoints: Vec<String>,
    pub etcd_ca_file: Option<PathBuf>,
    /// Under which the group's keys live: one etcd can hold several groups.
    pub key_prefix: String,
    /// This member's name, unique in the group.
    pub name: String,
    /// The URL the other members and clients reach this member's API at.
    pub advertise_url: String,
    /// How long a member's lease (and so its tasks) outlives its last keep-alive.
    pub lease_ttl_seconds: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            etcd_endpoints: Vec::new(),
            etcd_ca_file: None,
            key_prefix: "milvus-cdc".into(),
            name: String::new(),
            advertise_url: String::new(),
            lease_ttl_seconds: 10,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("the group's etcd ({endpoints}): {source}")]
    Etcd {
        endpoints: String,
        source: Box<etcd_client::Error>,
    },
    #[error("the group's etcd CA file: {0}")]
    Ca(#[from] crate::model::CaFileError),
    #[error("this appliance holds no lease in the group now (its etcd has not answered)")]
    NoLease,
}

/// A member as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Member {
    pub name: String,
    pub url: String,
    /// When its record was last written (Unix ms): its last keep-alive.
    pub heartbeat_ms: u64,
}

/// This member's lease, while it holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Until when this member may act as an owner (see the module).
    pub valid_until: Instant,
}

impl Lease {
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

pub struct Group {
    client: Client,
    endpoints: String,
    prefix: String,
    pub name: String,
    pub url: String,
    pub ttl: Duration,
    lease: watch::Sender<Option<Lease>>,
    /// Notified on every change under the prefix, and when the lease changes.
    changed: Arc<Notify>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Group {
    /// Connects; the lease and the watch start with [`Group::run`].
    pub async fn connect(config: &GroupConfig) -> Result<Self, GroupError> {
        let endpoints = config.etcd_endpoints.join(",");
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            // Below a lease's third: a silent etcd is noticed before the lease runs out.
            .with_timeout(Duration::from_secs(config.lease_ttl_seconds.max(3) / 3));
        if let Some(path) = &config.etcd_ca_file {
            let ca = CaFile::read(path)?;
            options =
                options.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(ca.pem())));
        } else if config
            .etcd_endpoints
            .iter()
            .any(|e| e.starts_with("https://"))
        {
            options = options.with_tls(TlsOptions::new().with_native_roots());
        }
        let client = Client::connect(&config.etcd_endpoints, Some(options))
            .await
            .map_err(|e| GroupError::Etcd {
                endpoints: endpoints.clone(),
                source: Box::new(e),
            })?;
        Ok(Self {
            client,
            endpoints,
            prefix: config.key_prefix.trim_end_matches('/').to_owned(),
            name: config.name.clone(),
            url: config.advertise_url.clone(),
            ttl: Duration::from_secs(config.lease_ttl_seconds),
            lease: watch::channel(None).0,
            changed: Arc::new(Notify::new()),
        })
    }

    fn err(&self, source: etcd_client::Error) -> GroupError {
        GroupError::Etcd {
            endpoints: self.endpoints.clone(),
            source: Box::new(source),
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}/{kind}/{id}", self.prefix)
    }

    /// The lease now, if this member holds a valid one.
    pub fn lease(&self) -> Option<Lease> {
        (*self.lease.borrow()).filter(Lease::is_valid)
    }

    /// Follows the lease as it is renewed or lost.
    pub fn lease_updates(&self) -> watch::Receiver<Option<Lease>> {
        self.lease.subscribe()
    }

    /// What the owner loop waits on: a change under the prefix, or of the lease.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Keeps this member's lease and record alive, and notifies every change under the
    /// prefix, for as long as the process runs.
    pub fn run(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move { me.keep_lease().await });
        let me = self.clone();
        tokio::spawn(async move { me.watch().await });
    }

    async fn keep_lease(&self) {
        let every = self.ttl / 5;
        let mut lease = None;
        loop {
            let id = match lease {
                Some(id) => id,
                None => match self.grant().await {
                    Ok(id) => id,
                    Err(err) => {
                        warn!(%err, "group: no lease granted; asking again");
                        tokio::time::sleep(every).await;
                        continue;
                    }
                },
            };
            // The same lease is kept through a broken connection: only an expired one is given
            // up (its tasks stopped by then, see `Lease::valid_until`).
            lease = match self.keep(id, every).await {
                Ok(()) => None,
                Err(err) => {
                    warn!(%err, lease = id, "group: the lease could not be renewed; trying again");
                    Some(id)
                }
            };
            self.changed.notify_one();
            tokio::time::sleep(every).await;
        }
    }

    async fn grant(&self) -> Result<i64, GroupError> {
        let granted_at = Instant::now();
        let id = self
            .client
            .clone()
            .lease_grant(self.ttl.as_secs() as i64, None)
            .await
            .map_err(|e| self.err(e))?
            .id();
        self.publish(id, granted_at);
        info!(member = %self.name, lease = id, "group: joined");
        Ok(id)
    }

    /// Renews the lease every `every`: Ok once it finds it expired, an error once a renewal
    /// fails.
    async fn keep(&self, id: i64, every: Duration) -> Result<(), GroupError> {
        let (mut keeper, mut stream) = self
            .client
            .clone()
            .lease_keep_alive(id)
            .await
            .map_err(|e| self.err(e))?;
        loop {
            if let Err(err) = self.put_member(id).await {
                warn!(%err, "group: this member's record not written; the lease goes on");
            }
            let sent = Instant::now();
            keeper.keep_alive().await.map_err(|e| self.err(e))?;
            match tokio::time::timeout(every, stream.message()).await {
                Ok(Ok(Some(reply))) if reply.ttl() > 0 => self.publish(id, sent),
                Ok(Ok(_)) => {
                    warn!(
                        lease = id,
                        "group: the lease expired; this member owns nothing now"
                    );
                    return Ok(());
                }
                Ok(Err(e)) => return Err(self.err(e)),
                Err(_) => return Err(GroupError::NoLease),
            }
            tokio::time::sleep(every).await;
        }
    }

    fn publish(&self, id: i64, sent: Instant) {
        let valid_until = sent + self.ttl * 2 / 3;
        self.lease.send_replace(Some(Lease { id, valid_until }));
    }

    async fn put_member(&self, lease: i64) -> Result<(), GroupError> {
        let member = Member {
            name: self.name.clone(),
            url: self.url.clone(),
            heartbeat_ms: now_ms(),
        };
        let value = serde_json::to_vec(&member).unwrap_or_default();
        self.client
            .clone()
            .put(
                self.key("members", &self.name),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    async fn watch(&self) {
        loop {
            let watched = self
                .client
                .clone()
                .watch(
                    format!("{}/", self.prefix),
                    Some(WatchOptions::new().with_prefix()),
                )
                .await;
            match watched {
                Ok((_watcher, mut stream)) => {
                    while let Ok(Some(_)) = stream.message().await {
                        self.changed.notify_one();
                    }
                }
                Err(err) => warn!(%err, "group: cannot watch the group's keys; trying again"),
            }
            tokio::time::sleep(self.ttl / 5).await;
        }
    }

    async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, GroupError> {
        let prefix = format!("{}/{kind}/", self.prefix);
        let reply = self
            .client
            .clone()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.err(e))?;
        Ok(reply
            .kvs()
            .iter()
            .filter_map(|kv| {
                let id = kv.key_str().ok()?.strip_prefix(&prefix)?.to_owned();
                Some((id, kv.value().to_vec()))
            })
            .collect())
    }

    /// The live members, by name.
    pub async fn members(&self) -> Result<Vec<Member>, GroupError> {
        let mut members: Vec<Member> = self
            .list("members")
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(members)
    }

    /// Every task's record, by id.
    pub async fn tasks(&self) -> Result<Vec<(String, Vec<u8>)>, GroupError> {
        self.list("tasks").await
    }

    /// Each owned task's owner, by task id.
    pub async fn owners(&self) -> Result<Vec<(String, String)>, GroupError> {
        Ok(self
            .list("owners")
            .await?
            .into_iter()
            .map(|(id, v)| (id, String::from_utf8_lossy(&v).into_owned()))
            .collect())
    }

    /// One task's record.
    pub async fn task(&self, id: &str) -> Result<Option<Vec<u8>>, GroupError> {
        self.get("tasks", id).await
    }

    pub async fn put_task(&self, id: &str, record: &[u8]) -> Result<(), GroupError> {
        self.put("tasks", id, record).await
    }

    async fn get(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>, GroupError> {
        let reply = self
            .client
            .clone()
            .get(self.key(kind, id), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(reply.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, kind: &str, id: &str, value: &[u8]) -> Result<(), GroupError> {
        self.client
            .clone()
            .put(self.key(kind, id), value, None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Deletes the task's record and checkpoint.
    pub async fn delete_task(&self, id: &str) -> Result<(), GroupError> {
        let txn = Txn::new().and_then(vec![
            TxnOp::delete(self.key("tasks", id), None),
            TxnOp::delete(self.key("checkpoints", id), None),
        ]);
        self.client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Makes this member the task's owner if it has none: answers the etcd revision of the
    /// claim (the task's run number here is at least that), or None if another owns it.
    pub async fn claim(&self, id: &str) -> Result<Option<i64>, GroupError> {
        let lease = self.lease().ok_or(GroupError::NoLease)?;
        let key = self.key("owners", id);
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key,
                self.name.clone(),
                Some(PutOptions::new().with_lease(lease.id)),
            )]);
        let reply = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(reply
            .succeeded()
            .then(|| reply.header().map_or(0, |h| h.revision())))
    }

    /// Leaves the group: the lease revoked, this member's record and claims go with it, so the
    /// others place its tasks elsewhere at once.
    pub async fn leave(&self) -> Result<(), GroupError> {
        if let Some(lease) = *self.lease.borrow() {
            self.client
                .clone()
                .lease_revoke(lease.id)
                .await
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Gives the task up, if this member owns it.
    pub async fn release(&self, id: &str) -> Result<(), GroupError> {
        let key = self.key("owners", id);
        let txn = Txn::new()
            .when(vec![Compare::value(
                key.clone(),
                CompareOp::Equal,
                self.name.clone(),
            )])
            .and_then(vec![TxnOp::delete(key, None)]);
        self.client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub async fn put_checkpoint(&self, id: &str, checkpoint: &[u8]) -> Result<(), GroupError> {
        self.put("checkpoints", id, checkpoint).await
    }

    pub async fn checkpoint(&self, id: &str) -> Result<Option<Vec<u8>>, GroupError> {
        self.get("checkpoints", id).await
    }
}

/// The member a task belongs on: the highest score of the task's id with each member's name
/// (rendezvous hashing), so a member joining or leaving moves only the tasks it wins or held.
pub fn placed_on<'a>(task: &str, members: &'a [Member]) -> Option<&'a Member> {
    members
        .iter()
        .max_by_key(|m| xxhash_rust::xxh3::xxh3_64(format!("{task}\u{0}{}", m.name).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            url: String::new(),
            heartbeat_ms: 0,
        }
    }

    #[test]
    fn a_member_joining_takes_tasks_only_for_itself() {
        let three: Vec<Member> = ["a", "b", "c"].map(member).into();
        let mut four = three.clone();
        four.push(member("d"));
        let tasks: Vec<String> = (0..200).map(|n| format!("task-{n}")).collect();
        let mut moved = 0;
        for task in &tasks {
            let before = placed_on(task, &three).map(|m| m.name.clone());
            let after = placed_on(task, &four).map(|m| m.name.clone());
            if before != after {
                assert_eq!(
                    after.as_deref(),
                    Some("d"),
                    "{task} moved between old members"
                );
                moved += 1;
            }
        }
        // About a quarter moves to the new member; none moves elsewhere.
        assert!((25..=75).contains(&moved), "{moved} of 200 moved");
    }

    #[test]
    fn no_member_places_nothing() {
        assert_eq!(placed_on("t", &[]), None);
    }
}
