//! `POST /cdc`: the reference CDC's request types create, delete, pause, resume, get, list and
//! position.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::input::{self, Body};
use super::tasks::{self, CreateRequest, TaskList, TaskView};
use super::{ApiError, ErrorBody};
use crate::task::Supervisor;

/// The reference CDC's request: `{"request_type": ..., "request_data": ...}`.
#[derive(Deserialize, ToSchema)]
#[serde(
    tag = "request_type",
    content = "request_data",
    rename_all = "lowercase"
)]
pub enum CdcRequest {
    Create(CreateRequest),
    Delete(TaskIdRequest),
    Pause(TaskIdRequest),
    Resume(TaskIdRequest),
    Get(TaskIdRequest),
    /// `request_data` may be left out.
    List(#[allow(dead_code)] Option<NoData>),
    Position(TaskIdRequest),
}

#[derive(Deserialize, ToSchema)]
pub struct TaskIdRequest {
    task_id: String,
}

impl CdcRequest {
    /// The task a request other than create and list is about.
    fn task_id(&self) -> Option<&str> {
        match self {
            CdcRequest::Create(_) | CdcRequest::List(_) => None,
            CdcRequest::Delete(r)
            | CdcRequest::Pause(r)
            | CdcRequest::Resume(r)
            | CdcRequest::Get(r)
            | CdcRequest::Position(r) => Some(&r.task_id),
        }
    }
}

/// Any object; its members are ignored.
#[derive(Deserialize, ToSchema)]
pub struct NoData {
    // Flattened, the struct is read as a map only: serde would read `[]` as an empty struct.
    #[serde(flatten)]
    #[schema(ignore)]
    _ignored: serde_json::Map<String, Value>,
}

/// `data` is `{"task_id"}` for create, `{"task": ...}` for get, `{"tasks": [...]}` for list,
/// `{"positions": ...}` for position and `{}` for the others.
#[derive(Serialize, ToSchema)]
pub struct CdcReply {
    /// Always 200 here; errors carry their status in `code` and as the HTTP status.
    code: u16,
    #[schema(value_type = Object)]
    data: Value,
}

#[utoipa::path(post, path = "/cdc", operation_id = "cdc", tag = "cdc",
    request_body = CdcRequest,
    responses(
        (status = 200, description = "Done", body = CdcReply),
        (status = 400, description = "The body is not a valid request: a name, list or task id \
            out of bounds is named", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "The task id is taken by another task, another task replicates \
            some of the collections to the same target, or the start is no longer retained by the broker", body = ErrorBody),
        (status = 502, description = "The source's etcd or broker cannot be reached",
            body = ErrorBody),
        (status = 413, description = "The body is larger than 2 MiB", body = ErrorBody),
        (status = 500, description = "The journal cannot be read or written", body = ErrorBody),
    ))]
pub async fn handle(
    State(supervisor): State<Arc<Supervisor>>,
    Body(body): Body,
) -> Result<Json<CdcReply>, ApiError> {
    let request: CdcRequest = tasks::decode(None, &body)?;
    if let Some(id) = request.task_id() {
        input::check_task_id(id)?;
    }
    let data = match request {
        CdcRequest::Create(request) => {
            let created = tasks::create(&supervisor, request).await?;
            json!({ "task_id": created.spec().task_id })
        }
        CdcRequest::Get(TaskIdRequest { task_id }) => {
            json!({ "task": TaskView::of(&supervisor, &supervisor.task(&task_id)?)? })
        }
        CdcRequest::List(_) => json!(TaskList::of(&supervisor, &supervisor.tasks()?)?),
        CdcRequest::Delete(TaskIdRequest { task_id }) => {
            tasks::blocking(&supervisor, move |s| s.delete(&task_id)).await?;
            json!({})
        }
        CdcRequest::Pause(TaskIdRequest { task_id }) => {
            tasks::blocking(&supervisor, move |s| s.pause(&task_id)).await?;
            json!({})
        }
        CdcRequest::Resume(TaskIdRequest { task_id }) => {
            tasks::blocking(&supervisor, move |s| s.resume(&task_id)).await?;
            json!({})
        }
        CdcRequest::Position(TaskIdRequest { task_id }) => {
            json!({ "positions": supervisor.positions(&task_id)? })
        }
    };
    Ok(Json(CdcReply { code: 200, data }))
}

/// The derived schema requires `request_data` in every variant, but `list` may leave it out:
/// the reference CDC's clients send `{"request_type": "list"}`.
pub fn document_list_without_data(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, Schema};
    let schemas = doc.components.as_mut().map(|c| &mut c.schemas);
    let Some(RefOr::T(Schema::OneOf(variants))) = schemas.and_then(|s| s.get_mut("CdcRequest"))
    else {
        return;
    };
    for variant in &mut variants.items {
        let RefOr::T(Schema::Object(variant)) = variant else {
            continue;
        };
        let is_list = matches!(
            variant.properties.get("request_type"),
            Some(RefOr::T(Schema::Object(tag)))
                if tag.enum_values.as_ref().is_some_and(|v| v.contains(&json!("list")))
        );
        if is_list {
            variant.required.retain(|field| field != "request_data");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(body: &str) -> Result<(), String> {
        match tasks::decode::<CdcRequest>(None, body.as_bytes()) {
            Ok(CdcRequest::List(_)) => Ok(()),
            Ok(_) => Err("not a list request".into()),
            Err(err) => Err(err.message),
        }
    }

    #[test]
    fn a_list_request_takes_no_data_an_empty_object_or_any_object_but_not_an_array() {
        assert_eq!(list(r#"{"request_type": "list"}"#), Ok(()));
        assert_eq!(
            list(r#"{"request_type": "list", "request_data": null}"#),
            Ok(())
        );
        assert_eq!(
            list(r#"{"request_type": "list", "request_data": {}}"#),
            Ok(())
        );
        assert_eq!(
            list(r#"{"request_type": "list", "request_data": {"x": 1}}"#),
            Ok(())
        );
        let refused = list(r#"{"request_type": "list", "request_data": []}"#);
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("request_data")),
            "{refused:?}"
        );
    }
}
