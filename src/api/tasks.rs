//! What both task APIs share: the create request, the task as shown to clients (secrets
//! blanked), and the supervisor calls that block (stopping a task joins its threads).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{ApiError, input};
use crate::model::StartPosition;
use crate::model::decode_position;
use crate::model::{NameMapping, Poison, Secret};
use crate::task::failover::FailoverReport;
use crate::task::switchover::SwitchoverRecord;
use crate::task::{
    ConsistencyPoint, CopyView, Created, RbacSpec, Supervisor, TargetSpec, TaskError, TaskSpec,
    TaskState,
};

/// The reference CDC's create request, plus `start_position`.
#[derive(Deserialize, ToSchema)]
pub struct CreateRequest {
    /// The target by its API (as the reference CDC); or give `target_cluster`.
    #[serde(default)]
    milvus_connect_param: Option<ConnectParam>,
    /// Not in the reference CDC: the target by the name of a cluster in the appliance's
    /// config (`[clusters.NAME]`, or `source` for `[source]`), reached with its `milvus_uri`,
    /// `milvus_token` and `milvus_ca_file`.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    target_cluster: Option<String>,
    /// Not in the reference CDC: the cluster the task reads, by its name in the appliance's
    /// config; `source` (the `[source]` table) when not given.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    source_cluster: Option<String>,
    /// Collection names of the default database, or `*` for every collection of every database.
    #[serde(default)]
    collection_infos: Vec<CollectionInfo>,
    /// Collections per database: `{"sales": [{"name": "*"}]}` for every collection of `sales`;
    /// the database `*` stands for every database.
    #[serde(default)]
    db_collections: BTreeMap<String, Vec<CollectionInfo>>,
    /// Not in the reference CDC: collections left out, in the shape of `db_collections`
    /// (`{"default": [{"name": "scratch"}]}`).
    #[serde(default)]
    exclude_db_collections: BTreeMap<String, Vec<CollectionInfo>>,
    /// As the reference CDC: `[{"source_db", "target_db", "col_mapping": {"from": "to"}}]`.
    #[serde(default)]
    name_mapping: Vec<NameMapping>,
    /// Given, a repeated create with the same request answers the existing task.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,128}$")]
    task_id: Option<String>,
    /// Not in the reference CDC: `latest` (default), `earliest`, `snapshot` (`latest`, and
    /// the rows of the collections that exist now copied first from the source's API) or
    /// `repair` (as `snapshot`, onto a target that has rows already: made equal by
    /// difference, every row replaced or deleted there saved first).
    #[serde(default)]
    start_position: StartPosition,
    /// Where to start on some physical channels: channel name to base64 `msg.MsgPosition`, as
    /// a task's `position` reports it. Other channels start at `start_position`.
    #[serde(default)]
    positions: BTreeMap<String, String>,
    /// Not in the reference CDC: pass over a message that cannot be replicated (logged and
    /// counted) instead of stopping the task on it for an operator to skip.
    #[serde(default)]
    skip_poison: bool,
    /// Not in the reference CDC: replicate access control too (roles, their grants, users'
    /// bindings to roles, users). `{}` opts in; `user_password` is the password users get on
    /// the target (the source keeps only hashes), and without it users are not made there.
    #[serde(default)]
    rbac: Option<RbacRequest>,
}

#[derive(Deserialize, ToSchema)]
pub struct RbacRequest {
    #[serde(default)]
    user_password: Option<String>,
}

/// A task's access-control replication; the password is never shown.
#[derive(Serialize, ToSchema)]
pub struct RbacView {
    /// Whether users are made on the target (the task has a `user_password`).
    makes_users: bool,
}

/// The target Milvus.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct ConnectParam {
    /// For example `http://127.0.0.1:19530`; a bracketed IPv6 address is accepted too.
    /// `https://` is TLS, trusting the CA of the appliance's `[target] ca_file` (or the
    /// system's roots).
    // The server's check is `milvus_client::plain_endpoint`.
    #[schema(
        pattern = r"^https?://([A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(:(0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/?$"
    )]
    uri: String,
    /// `user:password` or an API key; always blank in replies.
    #[serde(default)]
    token: String,
}

#[derive(Deserialize, Serialize, ToSchema)]
pub struct CollectionInfo {
    name: String,
}

/// A task as the reference CDC shows it.
#[derive(Serialize, ToSchema)]
pub struct TaskView {
    task_id: String,
    /// Not in the reference CDC: the cluster the task reads, when not `source`.
    #[serde(skip_serializing_if = "is_source_cluster")]
    source_cluster: String,
    /// Not in the reference CDC: the cluster the task writes to, when it was named so.
    #[serde(skip_serializing_if = "Option::is_none")]
    target_cluster: Option<String>,
    milvus_connect_param: ConnectParam,
    collection_infos: Vec<CollectionInfo>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    db_collections: BTreeMap<String, Vec<CollectionInfo>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exclude_db_collections: BTreeMap<String, Vec<CollectionInfo>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    name_mapping: Vec<NameMapping>,
    state: TaskState,
    /// Why a task failed, or the faults a running task is retrying; empty when none.
    reason: String,
    /// The message or row a Failed task stopped on; `POST /v1/tasks/{id}/skip` with its `at`
    /// moves past it.
    #[serde(skip_serializing_if = "Option::is_none")]
    poison: Option<Poison>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    skip_poison: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rbac: Option<RbacView>,
    /// Not in the reference CDC: the task's consistency point, the greatest source timestamp
    /// through which every in-scope channel is applied (the target holds the source's state as
    /// of it), with its age as the RPO. Omitted until every channel has staged a tick.
    #[serde(skip_serializing_if = "Option::is_none")]
    consistent_through: Option<ConsistencyPoint>,
    /// Not in the reference CDC: for a task started from a snapshot, how far each collection's
    /// copy has got.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    snapshot: Vec<CopyView>,
    /// Not in the reference CDC: what the task's failover did, once it has failed over.
    #[serde(skip_serializing_if = "Option::is_none")]
    failover: Option<FailoverReport>,
    /// Not in the reference CDC: its switchover, under way or done (with its report).
    #[serde(skip_serializing_if = "Option::is_none")]
    switchover: Option<SwitchoverRecord>,
    /// Not in the reference CDC: in a group (`[group]`), the member that runs the task.
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    tasks: Vec<TaskView>,
}

impl TaskList {
    pub fn of(supervisor: &Supervisor, specs: &[TaskSpec]) -> Result<Self, TaskError> {
        Ok(Self {
            tasks: specs
                .iter()
                .map(|spec| TaskView::of(supervisor, spec))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl TaskView {
    /// The task with its consistency point now; the token is blanked.
    pub fn of(supervisor: &Supervisor, spec: &TaskSpec) -> Result<Self, TaskError> {
        Ok(Self {
            task_id: spec.task_id.clone(),
            source_cluster: spec.source_cluster.clone(),
            target_cluster: spec.target.cluster.clone(),
            milvus_connect_param: ConnectParam {
                uri: spec.target.uri.clone(),
                token: String::new(),
            },
            collection_infos: spec
                .collections
                .iter()
                .map(|name| CollectionInfo { name: name.clone() })
                .collect(),
            db_collections: infos(&spec.databases),
            exclude_db_collections: infos(&spec.excluded),
            name_mapping: spec.name_mapping.clone(),
            state: spec.state,
            reason: spec.reason.clone().unwrap_or_default(),
            poison: spec.poison.clone(),
            skip_poison: spec.skip_poison,
            rbac: spec.rbac.as_ref().map(|r| RbacView {
                makes_users: r.user_password.is_some(),
            }),
            consistent_through: supervisor.consistent_through(&spec.task_id)?,
            snapshot: supervisor.copies(&spec.task_id)?,
            failover: spec.failover.as_deref().cloned(),
            switchover: spec.switchover.as_deref().cloned(),
            owner: spec.owner.clone(),
        })
    }
}

pub async fn create(
    supervisor: &Arc<Supervisor>,
    request: CreateRequest,
) -> Result<Created, ApiError> {
    let target = requested_target(request.milvus_connect_param, request.target_cluster)?;
    let source_cluster = request
        .source_cluster
        .unwrap_or_else(|| crate::config::SOURCE_CLUSTER.to_owned());
    input::check_cluster("source_cluster", &source_cluster)?;
    let names = |per_db: BTreeMap<String, Vec<CollectionInfo>>| -> BTreeMap<String, Vec<String>> {
        per_db
            .into_iter()
            .filter(|(_, infos)| !infos.is_empty())
            .map(|(db, infos)| (db, infos.into_iter().map(|c| c.name).collect()))
            .collect()
    };
    let collections: Vec<String> = request
        .collection_infos
        .into_iter()
        .map(|c| c.name)
        .collect();
    let databases = names(request.db_collections);
    let excluded = names(request.exclude_db_collections);
    if collections.is_empty() && databases.is_empty() {
        return Err(ApiError::bad_request(
            "collection_infos or db_collections must name at least one collection or \"*\"",
        ));
    }
    let mut budget = input::NameBudget::default();
    budget.collections("collection_infos", &collections)?;
    budget.per_database("db_collections", &databases)?;
    budget.per_database("exclude_db_collections", &excluded)?;
    budget.name_mapping(&request.name_mapping)?;
    let task_id = match request.task_id {
        Some(id) => {
            input::check_task_id(&id)?;
            id
        }
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    input::check_positions(&request.positions)?;
    let mut positions = BTreeMap::new();
    for (channel, text) in &request.positions {
        let position = decode_position(channel, text, supervisor.mq_kind(&source_cluster)?)
            .map_err(|e| ApiError::bad_request(format!("invalid positions.{channel}: {e}")))?;
        positions.insert(channel.clone(), position);
    }
    if let Some(password) = request.rbac.as_ref().and_then(|r| r.user_password.as_ref()) {
        input::check_text("rbac.user_password", password)?;
    }
    let spec = TaskSpec {
        task_id,
        source_cluster,
        target,
        collections,
        databases,
        excluded,
        name_mapping: request.name_mapping,
        start: request.start_position,
        positions,
        skip_poison: request.skip_poison,
        rbac: request.rbac.map(|r| RbacSpec {
            user_password: r.user_password.filter(|p| !p.is_empty()).map(Secret::new),
        }),
        state: TaskState::Initial,
        reason: None,
        poison: None,
        skip_approved: None,
        failover: None,
        switchover: None,
        owner: None,
    };
    Ok(supervisor.create(spec).await?)
}

/// The target a create names: by its API (`milvus_connect_param`) or by its cluster's name.
fn requested_target(
    connect: Option<ConnectParam>,
    cluster: Option<String>,
) -> Result<TargetSpec, ApiError> {
    Ok(match (connect, cluster) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give milvus_connect_param or target_cluster, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "milvus_connect_param (or target_cluster) must be given",
            ));
        }
        (Some(param), None) => {
            if param.uri.is_empty() {
                return Err(ApiError::bad_request(
                    "milvus_connect_param.uri must not be empty",
                ));
            }
            input::check_text("milvus_connect_param.uri", &param.uri)?;
            input::check_text("milvus_connect_param.token", &param.token)?;
            TargetSpec {
                uri: param.uri,
                token: Secret::new(param.token),
                cluster: None,
            }
        }
        (None, Some(cluster)) => {
            input::check_cluster("target_cluster", &cluster)?;
            TargetSpec {
                uri: String::new(),
                token: Secret::default(),
                cluster: Some(cluster),
            }
        }
    })
}

fn is_source_cluster(name: &str) -> bool {
    name == crate::config::SOURCE_CLUSTER
}

fn infos(per_db: &BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<CollectionInfo>> {
    per_db
        .iter()
        .map(|(db, names)| {
            let infos = names
                .iter()
                .map(|name| CollectionInfo { name: name.clone() })
                .collect();
            (db.clone(), infos)
        })
        .collect()
}

/// Runs a supervisor call that may wait for a task's threads to stop.
pub async fn blocking<T: Send + 'static>(
    supervisor: &Arc<Supervisor>,
    call: impl FnOnce(&Arc<Supervisor>) -> Result<T, TaskError> + Send + 'static,
) -> Result<T, ApiError> {
    let supervisor = supervisor.clone();
    tokio::task::spawn_blocking(move || call(&supervisor))
        .await
        .map_err(|e| ApiError::internal(format!("the task operation stopped: {e}")))?
        .map_err(ApiError::from)
}

/// Decodes a JSON body, naming the offending field by its path: from `root` when given
/// (REST: `invalid body.collection_infos: ...`), else from the top (`/cdc`:
/// `invalid request_data.task_id: ...`).
pub fn decode<T: for<'de> Deserialize<'de>>(
    root: Option<&str>,
    bytes: &[u8],
) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let what = match (root, path.as_str()) {
            (Some(root), ".") => root.to_owned(),
            (Some(root), path) => format!("{root}.{path}"),
            (None, ".") => "request body".to_owned(),
            (None, path) => path.to_owned(),
        };
        ApiError::bad_request(format!("invalid {what}: {}", e.into_inner()))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use proptest::prelude::*;
    use regex::Regex;
    use utoipa::PartialSchema;
    use utoipa::openapi::{RefOr, Schema};

    use super::*;
    use crate::milvus_client;

    /// The `pattern` the OpenAPI document gives for the property `field` of `T`.
    fn documented_pattern<T: PartialSchema>(field: &str) -> Regex {
        let RefOr::T(Schema::Object(object)) = T::schema() else {
            panic!("{field}'s type is documented as an object");
        };
        let Some(RefOr::T(Schema::Object(property))) = object.properties.get(field) else {
            panic!("{field} is documented");
        };
        let pattern = property
            .pattern
            .as_deref()
            .expect("a pattern is documented");
        Regex::new(pattern).expect("the documented pattern is a valid regex")
    }

    static URI: LazyLock<Regex> = LazyLock::new(|| documented_pattern::<ConnectParam>("uri"));
    static TASK_ID: LazyLock<Regex> =
        LazyLock::new(|| documented_pattern::<CreateRequest>("task_id"));

    proptest! {
        /// A client that keeps to the document is never refused a uri, and one that does not is
        /// never accepted; only a bracketed host may match the pattern and still be refused, as
        /// the pattern does not spell out what an IPv6 address is.
        #[test]
        fn the_target_uri_the_document_allows_is_the_one_the_server_accepts(
            (scheme, separator, host, port, rest) in (
                "https?|https?|HTTP|ftp|",
                "://|://|://|:/",
                "[A-Za-z0-9._-]{1,8}|[A-Za-z0-9._@*%-]{0,6}|\\[[0-9a-f:.]{0,6}\\]",
                ":[0-9]{1,6}|:0[0-9]{0,2}|:[0-9]{0,3}[a-z*+ :-][0-9]{0,2}|",
                "|/|/[a-z?#/]{1,2}|[?#][a-z]{0,2}",
            )
        ) {
            let uri = format!("{scheme}{separator}{host}{port}{rest}");
            let documented = URI.is_match(&uri);
            let accepted = milvus_client::check("target", &uri, "", None).is_ok();
            if uri.contains('[') {
                prop_assert!(!accepted || documented, "{uri:?} is accepted but not documented");
            } else {
                prop_assert_eq!(accepted, documented, "{:?}", uri);
            }
        }

        #[test]
        fn the_task_id_the_document_allows_is_the_one_the_server_accepts(
            id in "[A-Za-z0-9._/ -]{0,130}"
        ) {
            let documented = TASK_ID.is_match(&id);
            prop_assert_eq!(input::check_task_id(&id).is_ok(), documented, "{:?}", id);
        }
    }
}
