//! REST beside `POST /cdc`: the same operations on `/v1/tasks`, with real HTTP status codes.
//! Each handler's `#[utoipa::path]` is its entry in `/openapi.json`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Serialize;
use utoipa::ToSchema;

use super::input::{self, Body};
use super::tasks::{self, CreateRequest, TaskList, TaskView};
use super::{ApiError, ErrorBody};
use crate::model::PoisonAt;
use crate::task::roles::{ClusterView, LastFailover, LastSwitchover};
use crate::task::switchover::{SwitchoverReport, SwitchoverRequest};
use crate::task::{Created, Supervisor, TaskPositions, TaskStatus};
use crate::verify::{Limits, Report};

#[utoipa::path(get, path = "/v1/tasks", operation_id = "list_tasks", tag = "tasks",
    responses(
        (status = 200, description = "Every task", body = TaskList),
        (status = 500, description = "The journal cannot be read", body = ErrorBody),
    ))]
pub async fn list(State(supervisor): State<Arc<Supervisor>>) -> Result<Json<TaskList>, ApiError> {
    Ok(Json(TaskList::of(&supervisor, &supervisor.tasks()?)?))
}

#[utoipa::path(post, path = "/v1/tasks", operation_id = "create_task", tag = "tasks", request_body = CreateRequest,
    responses(
        (status = 201, description = "The task was created and is running", body = TaskView),
        (status = 200, description = "The same task existed already", body = TaskView),
        (status = 400, description = "The body is not a valid create request: a name, list or task id \
            out of bounds is named", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 409, description = "The task id is taken by another task, another task replicates \
            some of the collections to the same target, or the start is no longer retained by the broker", body = ErrorBody),
        (status = 502, description = "The source's etcd or broker cannot be reached", body = ErrorBody),
        (status = 500, description = "The journal cannot be written", body = ErrorBody),
    ))]
pub async fn create(
    State(supervisor): State<Arc<Supervisor>>,
    Body(body): Body,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let (status, spec) =
        match tasks::create(&supervisor, tasks::decode(Some("body"), &body)?).await? {
            Created::New(spec) => (StatusCode::CREATED, spec),
            Created::Existing(spec) => (StatusCode::OK, spec),
        };
    Ok((status, Json(TaskView::of(&supervisor, &spec)?)))
}

/// The `{id}` of a task's path, checked as a task id before any call sees it. Its rejection (an
/// id that is not UTF-8 once percent-decoded, or not a task id) is an [`ApiError`], so the
/// reply is the JSON error body every other error has.
pub struct TaskId(String);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        input::check_task_id(&id)?;
        Ok(Self(id))
    }
}

#[utoipa::path(get, path = "/v1/tasks/{id}", operation_id = "get_task", tag = "tasks", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The task", body = TaskView),
        (status = 400, description = "The id is not a task id (1 to 128 letters, digits, '.', '_' or '-')", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 500, description = "The journal cannot be read", body = ErrorBody),
    ))]
pub async fn get(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
) -> Result<Json<TaskView>, ApiError> {
    Ok(Json(TaskView::of(&supervisor, &supervisor.task(&id)?)?))
}

#[utoipa::path(delete, path = "/v1/tasks/{id}", operation_id = "delete_task", tag = "tasks", params(("id" = String, Path)),
    responses(
        (status = 204, description = "The task and its journal rows are gone"),
        (status = 400, description = "The id is not a task id (1 to 128 letters, digits, '.', '_' or '-')", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 500, description = "The journal cannot be written", body = ErrorBody),
    ))]
pub async fn delete(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
) -> Result<StatusCode, ApiError> {
    tasks::blocking(&supervisor, move |s| s.delete(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/tasks/{id}/pause", operation_id = "pause_task", tag = "tasks", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The task is paused; its journal is kept", body = TaskView),
        (status = 400, description = "The id is not a task id (1 to 128 letters, digits, '.', '_' or '-')", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 500, description = "The journal cannot be written", body = ErrorBody),
    ))]
pub async fn pause(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
) -> Result<Json<TaskView>, ApiError> {
    let spec = tasks::blocking(&supervisor, move |s| s.pause(&id)).await?;
    Ok(Json(TaskView::of(&supervisor, &spec)?))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/resume", operation_id = "resume_task", tag = "tasks", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The task runs again from its journal", body = TaskView),
        (status = 400, description = "The id is not a task id (1 to 128 letters, digits, '.', '_' or '-')", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 500, description = "The journal cannot be written", body = ErrorBody),
    ))]
pub async fn resume(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
) -> Result<Json<TaskView>, ApiError> {
    let spec = tasks::blocking(&supervisor, move |s| s.resume(&id)).await?;
    Ok(Json(TaskView::of(&supervisor, &spec)?))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/failover", operation_id = "failover_task", tag = "tasks", params(("id" = String, Path)),
    responses(
        (status = 200, description = "The task reads its source no more and is failing over \
            (state FailingOver): it applies what its journal holds that can be applied \
            consistently, writes the rest to a file, and ends FailedOver with its report \
            (`failover`). Works with the source unreachable; repeated, it answers the task as \
            it is", body = TaskView),
        (status = 400, description = "The id is not a task id (1 to 128 letters, digits, '.', '_' or '-')", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 500, description = "The journal cannot be written", body = ErrorBody),
    ))]
pub async fn failover(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
) -> Result<Json<TaskView>, ApiError> {
    let spec = tasks::blocking(&supervisor, move |s| s.failover(&id)).await?;
    Ok(Json(TaskView::of(&supervisor, &spec)?))
}

#[utoipa::path(post, path = "/v1/tasks/{id}/switchover", operation_id = "switchover_task", tag = "tasks",
    params(("id" = String, Path)), request_body = SwitchoverRequest,
    responses(
        (status = 200, description = "Switched over: the source was fenced, the target caught up \
            with it (RPO 0), the task is paused and its reverse task runs. Repeated, it answers \
            the same report", body = SwitchoverReport),
        (status = 400, description = "The id, or the reverse task's, is not a task id", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Not switched over, and everything left as it was: the \
            reason says why (the target not caught up in time, a write past the fence, a \
            difference found, a target that is no cluster of the config)", body = ErrorBody),
    ))]
pub async fn switchover(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
    Body(body): Body,
) -> Result<Json<SwitchoverReport>, ApiError> {
    let mut request: SwitchoverRequest = if body.iter().all(u8::is_ascii_whitespace) {
        SwitchoverRequest::default()
    } else if body.trim_ascii_start().starts_with(b"{") {
        tasks::decode(Some("body"), &body)?
    } else {
        return Err(ApiError::bad_request(
            "invalid body: expected a JSON object",
        ));
    };
    if !(1..=86_400).contains(&request.timeout_seconds) {
        return Err(ApiError::bad_request(
            "invalid body.timeout_seconds: 1 to 86400",
        ));
    }
    let reverse = request
        .reverse_task_id
        .take()
        .unwrap_or_else(|| format!("{id}-reverse"));
    input::check_task_id(&reverse)
        .map_err(|e| ApiError::bad_request(format!("invalid body.reverse_task_id: {e}")))?;
    request.reverse_task_id = Some(reverse);
    Ok(Json(supervisor.switchover(&id, &request).await?))
}

/// The body of a skip: the poison to move past, as the task shows it (`poison.at`).
#[derive(serde::Deserialize, ToSchema)]
pub struct SkipRequest {
    at: PoisonAt,
}

#[utoipa::path(post, path = "/v1/tasks/{id}/skip", operation_id = "skip_poison", tag = "tasks",
    params(("id" = String, Path)), request_body = SkipRequest,
    responses(
        (status = 200, description = "The task moved past exactly that poison and runs again; \
            repeated, it changes nothing", body = TaskView),
        (status = 400, description = "The body does not name a poison, or the id is not a task id", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task is not stopped on that poison", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 500, description = "The journal cannot be written", body = ErrorBody),
    ))]
pub async fn skip(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
    Body(body): Body,
) -> Result<Json<TaskView>, ApiError> {
    let SkipRequest { at } = tasks::decode(Some("body"), &body)?;
    let spec = tasks::blocking(&supervisor, move |s| s.skip(&id, &at)).await?;
    Ok(Json(TaskView::of(&supervisor, &spec)?))
}

/// What a verify may be asked: both optional.
#[derive(serde::Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Keys listed per kind of difference and collection (all are counted); 10 by default.
    #[schema(minimum = 0, maximum = 10000)]
    first: Option<u16>,
    /// How long a key found different may wait for the target to catch up before it is
    /// reported; 60 by default.
    #[schema(minimum = 0, maximum = 3600)]
    settle_seconds: Option<u16>,
}

#[utoipa::path(post, path = "/v1/tasks/{id}/verify", operation_id = "verify_task", tag = "tasks",
    params(("id" = String, Path)), request_body(content = Option<VerifyRequest>),
    responses(
        (status = 200, description = "What the comparison of the task's collections on both sides \
            found; `equal` and `complete` say whether the target is the source's copy", body = Report),
        (status = 400, description = "The body is not a verify request, or the id is not a task id", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The appliance has no [source] milvus_uri to read rows from", body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 500, description = "The journal cannot be read", body = ErrorBody),
        (status = 502, description = "The source's metadata cannot be read", body = ErrorBody),
    ))]
pub async fn verify(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
    Body(body): Body,
) -> Result<Json<Report>, ApiError> {
    let request: VerifyRequest = if body.iter().all(u8::is_ascii_whitespace) {
        VerifyRequest::default()
    } else if body.trim_ascii_start().starts_with(b"{") {
        tasks::decode(Some("body"), &body)?
    } else {
        // serde would read a struct from an array too.
        return Err(ApiError::bad_request(
            "invalid body: expected a JSON object",
        ));
    };
    if request.first.is_some_and(|n| n > 10_000) {
        return Err(ApiError::bad_request("invalid body.first: at most 10000"));
    }
    if request.settle_seconds.is_some_and(|s| s > 3600) {
        return Err(ApiError::bad_request(
            "invalid body.settle_seconds: at most 3600",
        ));
    }
    let defaults = Limits::default();
    let limits = Limits {
        first: request.first.map_or(defaults.first, usize::from),
        settle: request
            .settle_seconds
            .map_or(defaults.settle, |s| Duration::from_secs(u64::from(s))),
        ..defaults
    };
    Ok(Json(supervisor.verify(&id, &limits).await?))
}

#[utoipa::path(get, path = "/v1/tasks/{id}/positions", operation_id = "task_positions", tag = "tasks", params(("id" = String, Path)),
    responses(
        (status = 200, description = "Where the task reads and what the target acknowledged",
            body = TaskPositions),
        (status = 400, description = "The id is not a task id (1 to 128 letters, digits, '.', '_' or '-')", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 500, description = "The journal cannot be read", body = ErrorBody),
    ))]
pub async fn positions(
    State(supervisor): State<Arc<Supervisor>>,
    TaskId(id): TaskId,
) -> Result<Json<TaskPositions>, ApiError> {
    Ok(Json(supervisor.positions(&id)?))
}

#[derive(Serialize, ToSchema)]
pub struct StatusReport {
    tasks: Vec<TaskStatus>,
    /// Each configured cluster's role (primary, standby, fenced, lost, none), as the tasks
    /// make it.
    clusters: Vec<ClusterView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_failover: Option<LastFailover>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_switchover: Option<LastSwitchover>,
    /// With `[group]`: this member, the live members and each task's owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<crate::task::GroupView>,
}

/// Every task's state, lag, throughput and lag over the last 15 minutes (the status page's data).
#[utoipa::path(get, path = "/v1/status", operation_id = "status", tag = "observability",
    responses(
        (status = 200, description = "Every task's state, lag and throughput", body = StatusReport),
        (status = 500, description = "The journal cannot be read", body = ErrorBody),
    ))]
pub async fn status(
    State(supervisor): State<Arc<Supervisor>>,
) -> Result<Json<StatusReport>, ApiError> {
    let (tasks, clusters, (last_failover, last_switchover)) = tasks::blocking(&supervisor, |s| {
        Ok((s.status()?, s.cluster_roles()?, s.last_events()?))
    })
    .await?;
    Ok(Json(StatusReport {
        tasks,
        clusters,
        last_failover,
        last_switchover,
        group: supervisor.group_view(),
    }))
}
