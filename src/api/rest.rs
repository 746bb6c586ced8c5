//! REST beside `POST /cdc`: the same operations on `/v1/tasks`, with real HTTP status codes.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, tasks};
use crate::task::{Created, Supervisor, TaskPositions};

type Reply = Result<Json<Value>, ApiError>;

pub async fn list(State(supervisor): State<Arc<Supervisor>>) -> Reply {
    let all: Vec<Value> = supervisor.tasks()?.iter().map(tasks::view).collect();
    Ok(Json(json!({ "tasks": all })))
}

pub async fn create(
    State(supervisor): State<Arc<Supervisor>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (status, spec) = match tasks::create(&supervisor, tasks::body(&body)?).await? {
        Created::New(spec) => (StatusCode::CREATED, spec),
        Created::Existing(spec) => (StatusCode::OK, spec),
    };
    Ok((status, Json(tasks::view(&spec))))
}

pub async fn get(State(supervisor): State<Arc<Supervisor>>, Path(id): Path<String>) -> Reply {
    Ok(Json(tasks::view(&supervisor.task(&id)?)))
}

pub async fn delete(
    State(supervisor): State<Arc<Supervisor>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    tasks::blocking(&supervisor, move |s| s.delete(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(State(supervisor): State<Arc<Supervisor>>, Path(id): Path<String>) -> Reply {
    let spec = tasks::blocking(&supervisor, move |s| s.pause(&id)).await?;
    Ok(Json(tasks::view(&spec)))
}

pub async fn resume(State(supervisor): State<Arc<Supervisor>>, Path(id): Path<String>) -> Reply {
    let spec = tasks::blocking(&supervisor, move |s| s.resume(&id)).await?;
    Ok(Json(tasks::view(&spec)))
}

pub async fn positions(
    State(supervisor): State<Arc<Supervisor>>,
    Path(id): Path<String>,
) -> Result<Json<TaskPositions>, ApiError> {
    Ok(Json(supervisor.positions(&id)?))
}

/// Every task's state, lag, throughput and lag over the last 15 minutes (the status page's data).
pub async fn status(State(supervisor): State<Arc<Supervisor>>) -> Reply {
    let tasks = tasks::blocking(&supervisor, |s| s.status()).await?;
    Ok(Json(json!({ "tasks": tasks })))
}
