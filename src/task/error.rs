//! What a task operation can fail with; `api` maps each kind to an HTTP status in one place.

use crate::journal::JournalError;
use crate::source::meta::MetaError;
use crate::source::meta::version::VersionError;
use crate::source::mq::MqError;
use crate::source::seed::SeedError;
use crate::source::start::StartError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("task {0} already exists with another target, collections or start")]
    Exists(String),
    #[error(
        "task {existing} already replicates some of these collections to {target}: the target \
         would get their rows twice. Narrow the collections, or delete task {existing} first"
    )]
    Overlaps { existing: String, target: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    #[error("task {task} is owned by member {owner} of the group ({url}): ask it there")]
    OwnedElsewhere {
        task: String,
        owner: String,
        url: String,
    },
    #[error("source metadata: {0}")]
    Meta(#[from] MetaError),
    #[error(transparent)]
    SourceVersion(#[from] VersionError),
    #[error(transparent)]
    Mq(#[from] MqError),
    #[error("corrupt task record {0}: {1}")]
    Corrupt(String, String),
    #[error("milvus_connect_param: {0}")]
    InvalidTarget(String),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(
        "task {task} is not stopped on {at}{}",
        stopped_on.as_ref().map_or(": it is stopped on no poison".to_owned(), |p| format!(" but on {p}"))
    )]
    NotStoppedThere {
        task: String,
        at: String,
        stopped_on: Option<String>,
    },
    /// The table of the task's source cluster in the config (`source`, `clusters.NAME`).
    #[error(
        "snapshot copies and verify read rows through the source's Milvus API: set [{0}] \
         milvus_uri in the appliance's config"
    )]
    NoSourceApi(String),
    #[error("the source's milvus_uri: {0}")]
    SourceApi(String),
    #[error("no cluster {0:?} in the appliance's config ([source] or [clusters.NAME])")]
    UnknownCluster(String),
    #[error(
        "cluster {cluster} has no milvus_uri in the appliance's config: a task cannot write to it"
    )]
    NoClusterApi { cluster: String },
    #[error(
        "task {existing} replicates the other way ({from} to {to}) over some of the same \
         collections: two tasks in opposite directions would send every write back and forth. \
         Pause or delete it first"
    )]
    ReverseTwin {
        existing: String,
        from: String,
        to: String,
    },
    #[error(transparent)]
    Target(#[from] crate::apply::TargetError),
    #[error(
        "task {0} failed over: it never reads or applies again. Start the way back with a task \
         the other way (see README, \"Disaster recovery\"), or delete it"
    )]
    FailedOver(String),
    #[error(
        "task {task} switched over: task {reverse} replicates the other way now and this one never \
         runs again (it would send the same writes twice). Switch {reverse} over to go back, or \
         fail {reverse} over if its source is lost"
    )]
    SwitchedOver { task: String, reverse: String },
    #[error("task {0} is failing over: wait until it has failed over (`task get` shows it)")]
    FailingOver(String),
    #[error("switchover of task {task}: {reason}")]
    Switchover { task: String, reason: String },
    #[error("failover of task {task}: {reason}")]
    Failover { task: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<SeedError> for TaskError {
    fn from(err: SeedError) -> Self {
        match err {
            SeedError::Start(err) => err.into(),
            SeedError::Mq(err) => err.into(),
            SeedError::Meta(err) => err.into(),
            SeedError::Journal(err) => err.into(),
        }
    }
}
