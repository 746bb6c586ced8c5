//! `POST /cdc`: the reference CDC's request types create, get, list and delete.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiError;
use crate::task::{StartPosition, Supervisor, TargetSpec, TaskSpec, TaskState};

#[derive(Deserialize)]
struct Envelope {
    request_type: String,
    #[serde(default)]
    request_data: Value,
}

#[derive(Deserialize)]
struct CreateRequest {
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

#[derive(Deserialize)]
struct TaskIdRequest {
    task_id: String,
}

pub async fn handle(
    State(supervisor): State<Arc<Supervisor>>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let envelope: Envelope = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let data = match envelope.request_type.as_str() {
        "create" => {
            let create: CreateRequest = request_data(envelope.request_data)?;
            if create.milvus_connect_param.uri.is_empty() {
                return Err(ApiError::bad_request(
                    "milvus_connect_param.uri must not be empty",
                ));
            }
            if create.collection_infos.is_empty() {
                return Err(ApiError::bad_request(
                    "collection_infos must name at least one collection or \"*\"",
                ));
            }
            let spec = TaskSpec {
                task_id: create
                    .task_id
                    .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
                target: TargetSpec {
                    uri: create.milvus_connect_param.uri,
                    token: create.milvus_connect_param.token,
                },
                collections: create
                    .collection_infos
                    .into_iter()
                    .map(|c| c.name)
                    .collect(),
                start: create.start_position,
                state: TaskState::Initial,
                reason: None,
            };
            let spec = supervisor.create(spec).await?;
            json!({ "task_id": spec.task_id })
        }
        "get" => {
            let req: TaskIdRequest = request_data(envelope.request_data)?;
            json!({ "task": task_view(&supervisor.task(&req.task_id)?) })
        }
        "list" => {
            let tasks: Vec<Value> = supervisor.tasks()?.iter().map(task_view).collect();
            json!({ "tasks": tasks })
        }
        "delete" => {
            let req: TaskIdRequest = request_data(envelope.request_data)?;
            let supervisor = supervisor.clone();
            tokio::task::spawn_blocking(move || supervisor.delete(&req.task_id))
                .await
                .map_err(|e| ApiError::internal(format!("deleting the task stopped: {e}")))??;
            json!({})
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown request_type {other:?}: expected create, get, list or delete"
            )));
        }
    };
    Ok(Json(json!({ "code": 200, "data": data })))
}

/// Decodes `request_data`, naming the offending field on error.
fn request_data<T: for<'de> Deserialize<'de>>(data: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(data).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        ApiError::bad_request(format!("invalid request_data{at}: {}", e.into_inner()))
    })
}

/// A task as the reference CDC shows it; the token is blanked.
fn task_view(spec: &TaskSpec) -> Value {
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
