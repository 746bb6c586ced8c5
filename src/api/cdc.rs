//! `POST /cdc`: the reference CDC's request types create, delete, pause, resume, get, list and
//! position.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, tasks};
use crate::task::Supervisor;

#[derive(Deserialize)]
struct Envelope {
    request_type: String,
    #[serde(default)]
    request_data: Value,
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
            let created =
                tasks::create(&supervisor, tasks::request_data(envelope.request_data)?).await?;
            json!({ "task_id": created.spec().task_id })
        }
        "get" => {
            let req: TaskIdRequest = tasks::request_data(envelope.request_data)?;
            json!({ "task": tasks::view(&supervisor.task(&req.task_id)?) })
        }
        "list" => {
            let all: Vec<Value> = supervisor.tasks()?.iter().map(tasks::view).collect();
            json!({ "tasks": all })
        }
        "delete" => {
            let req: TaskIdRequest = tasks::request_data(envelope.request_data)?;
            tasks::blocking(&supervisor, move |s| s.delete(&req.task_id)).await?;
            json!({})
        }
        "pause" => {
            let req: TaskIdRequest = tasks::request_data(envelope.request_data)?;
            tasks::blocking(&supervisor, move |s| s.pause(&req.task_id)).await?;
            json!({})
        }
        "resume" => {
            let req: TaskIdRequest = tasks::request_data(envelope.request_data)?;
            tasks::blocking(&supervisor, move |s| s.resume(&req.task_id)).await?;
            json!({})
        }
        "position" => {
            let req: TaskIdRequest = tasks::request_data(envelope.request_data)?;
            json!({ "positions": supervisor.positions(&req.task_id)? })
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown request_type {other:?}: expected create, delete, pause, resume, get, list or position"
            )));
        }
    };
    Ok(Json(json!({ "code": 200, "data": data })))
}
