//! What both task APIs share: the create request, the task as shown to clients (secrets
//! blanked), and the supervisor calls that block (stopping a task joins its threads).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiError;
use crate::task::{Created, StartPosition, Supervisor, TargetSpec, TaskError, TaskSpec, TaskState};

/// The reference CDC's create request, plus `start_position`.
#[derive(Deserialize)]
pub struct CreateRequest {
    milvus_connect_param: ConnectParam,
    collection_infos: Vec<CollectionInfo>,
    #[serde(default)]
    task_id: Option<String>,
    /// Not in the reference CDC: `latest` (default) or `earliest`.
    #[serde(default)]
    start_position: StartPosition,
}

#[derive(Deserialize)]
struct ConnectParam {
    uri: String,
    #[serde(default)]
    token: String,
}

#[derive(Deserialize, Serialize)]
struct CollectionInfo {
    name: String,
}

pub async fn create(
    supervisor: &Arc<Supervisor>,
    request: CreateRequest,
) -> Result<Created, ApiError> {
    if request.milvus_connect_param.uri.is_empty() {
        return Err(ApiError::bad_request(
            "milvus_connect_param.uri must not be empty",
        ));
    }
    if request.collection_infos.is_empty() {
        return Err(ApiError::bad_request(
            "collection_infos must name at least one collection or \"*\"",
        ));
    }
    let spec = TaskSpec {
        task_id: request
            .task_id
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        target: TargetSpec {
            uri: request.milvus_connect_param.uri,
            token: request.milvus_connect_param.token,
        },
        collections: request
            .collection_infos
            .into_iter()
            .map(|c| c.name)
            .collect(),
        start: request.start_position,
        state: TaskState::Initial,
        reason: None,
    };
    Ok(supervisor.create(spec).await?)
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

/// A task as the reference CDC shows it; the token is blanked.
pub fn view(spec: &TaskSpec) -> Value {
    let collections: Vec<CollectionInfo> = spec
        .collections
        .iter()
        .map(|name| CollectionInfo { name: name.clone() })
        .collect();
    json!({
        "task_id": spec.task_id,
        "milvus_connect_param": { "uri": spec.target.uri, "token": "" },
        "collection_infos": collections,
        "state": spec.state,
        "reason": spec.reason.clone().unwrap_or_default(),
    })
}

/// Decodes `request_data`, naming the offending field on error.
pub fn request_data<T: for<'de> Deserialize<'de>>(data: Value) -> Result<T, ApiError> {
    decode("request_data", data)
}

/// Decodes a JSON body, naming the offending field on error.
pub fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    decode("body", value)
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, data: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        ApiError::bad_request(format!("invalid {what}{at}: {}", e.into_inner()))
    })
}
