//! The HTTP surface: the upstream-compatible `POST /cdc`, REST on `/v1/tasks`, the status page
//! at `/` (with `/v1/status`), `/metrics`, `/healthz` (live), `/readyz` (able to work) and
//! `/openapi.json`.
//!
//! Routes and their OpenAPI entries are registered together (`utoipa_axum::routes!`), so the
//! document cannot list a route the server lacks or miss one it has.
//!
//! `/cdc` keeps the reference Go CDC's shapes: a body `{"request_type", "request_data"}` and a reply
//! `{"code":200,"data":...}` or `{"code":4xx|5xx,"message":...}`. Every error is built in one
//! place, [`ApiError`], and secrets never leave in a reply. Who may call it is `guard`'s.

mod cdc;
mod guard;
mod input;
mod owner;
mod rest;
mod tasks;

pub use guard::{Access, AllowedHosts};

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, SecurityRequirement};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::source::meta::version::VersionError;
use crate::source::start::StartError;
use crate::task::{Supervisor, TaskError};

#[derive(OpenApi)]
#[openapi(
    info(title = "milvus-cdc", description = "Replicates a source Milvus to a target Milvus."),
    tags(
        (name = "cdc", description = "The reference Go Milvus-CDC's API"),
        (name = "tasks", description = "Replication tasks"),
        (name = "observability", description = "Lag, state and health"),
    )
)]
struct ApiDoc;

/// The API. Every route answers only requests addressed to the appliance and not sent by
/// another site's page; with a token, every route but `/healthz`, `/readyz`, `/` and
/// `/openapi.json` needs `Authorization: Bearer <token>` too.
pub fn router(supervisor: Arc<Supervisor>, access: Access) -> Router {
    let readiness = supervisor.clone();
    let (mut api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(cdc::handle))
        .routes(routes!(rest::list, rest::create))
        .routes(routes!(rest::get, rest::delete))
        .routes(routes!(rest::pause))
        .routes(routes!(rest::resume))
        .routes(routes!(rest::skip))
        .routes(routes!(rest::failover))
        .routes(routes!(rest::switchover))
        .routes(routes!(rest::verify))
        .routes(routes!(rest::positions))
        .routes(routes!(rest::status))
        .routes(routes!(metrics))
        .with_state(supervisor.clone())
        .split_for_parts();
    api = api.layer(middleware::from_fn_with_state(
        supervisor,
        owner::to_the_owner,
    ));
    cdc::document_list_without_data(&mut doc);
    if let Some(token) = access.token {
        api = api.layer(middleware::from_fn_with_state(
            Arc::new(token),
            guard::require_token,
        ));
        require_bearer(&mut doc);
    }
    // These hold no data (the page fetches /v1/status, with the token): served to anyone.
    let (public, public_doc) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(status_page))
        .with_state(readiness)
        .split_for_parts();
    doc.merge(public_doc);
    let doc = Arc::new(doc);
    api.merge(public)
        .route(
            "/openapi.json",
            get(move || async move { axum::Json(doc.as_ref().clone()) }),
        )
        // Every error has the JSON body, these too.
        .fallback(|uri: Uri| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no such route: {}", uri.path()),
            )
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            let message = format!("{} does not take {method}", uri.path());
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message)
        })
        .layer(middleware::from_fn_with_state(
            Arc::new(access.hosts),
            guard::same_origin_only,
        ))
}

/// Marks every operation documented so far as needing the bearer token.
fn require_bearer(doc: &mut Document) {
    let scheme = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("bearer", scheme);
    let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            operation.security = Some(vec![bearer.clone()]);
        }
    }
}

/// Liveness: the process answers. Whether it can do its work is `/readyz`.
#[utoipa::path(get, path = "/healthz", tag = "observability",
    responses((status = 200, description = "The server is up", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "OK"
}

#[utoipa::path(get, path = "/readyz", tag = "observability",
    responses(
        (status = 200, description = "The appliance can do its work", body = String, content_type = "text/plain"),
        (status = 503, description = "It cannot, and why: the journal's disk failing or too full to stage, since when", body = String,
            content_type = "text/plain"),
    ))]
async fn readyz(State(supervisor): State<Arc<Supervisor>>) -> Response {
    match supervisor.journal().unready() {
        None => "ready".into_response(),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")).into_response(),
    }
}

#[utoipa::path(get, path = "/", tag = "observability",
    responses((status = 200, description = "The status page", body = String, content_type = "text/html")))]
async fn status_page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}

#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses(
        (status = 200, description = "Prometheus text format", body = String,
            content_type = "application/openmetrics-text"),
        (status = 500, description = "The journal cannot be read", body = ErrorBody),
    ))]
async fn metrics(State(supervisor): State<Arc<Supervisor>>) -> Result<Response, ApiError> {
    let text = crate::metrics::render(&supervisor.metrics_snapshot()?)
        .map_err(|e| ApiError::internal(format!("metrics: {e}")))?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// Every error reply: the HTTP status again in `code`, and one line saying what is wrong.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    code: u16,
    message: String,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: String) -> Self {
        Self { status, message }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<TaskError> for ApiError {
    fn from(err: TaskError) -> Self {
        let status = match err {
            TaskError::NotFound(_) => StatusCode::NOT_FOUND,
            TaskError::Exists(_)
            | TaskError::Overlaps { .. }
            | TaskError::ReverseTwin { .. }
            | TaskError::NotStoppedThere { .. }
            | TaskError::FailedOver(_)
            | TaskError::FailingOver(_)
            | TaskError::SwitchedOver { .. }
            | TaskError::OwnedElsewhere { .. }
            | TaskError::Switchover { .. } => StatusCode::CONFLICT,
            TaskError::Group(_) => StatusCode::SERVICE_UNAVAILABLE,
            TaskError::Target(_) => StatusCode::BAD_GATEWAY,
            TaskError::InvalidTarget(_)
            | TaskError::UnknownCluster(_)
            | TaskError::NoClusterApi { .. } => StatusCode::BAD_REQUEST,
            TaskError::NoSourceApi(_) | TaskError::SourceApi(_) => StatusCode::CONFLICT,
            TaskError::Start(
                StartError::UnknownChannel(_)
                | StartError::WrongQueue { .. }
                | StartError::BadCollectionStart { .. },
            ) => StatusCode::BAD_REQUEST,
            TaskError::Start(
                StartError::PositionNotRetained { .. } | StartError::StartNotRetained { .. },
            ) => StatusCode::CONFLICT,
            TaskError::SourceVersion(VersionError::Unsupported { .. }) => StatusCode::CONFLICT,
            TaskError::Meta(_) | TaskError::Mq(_) | TaskError::SourceVersion(_) => {
                StatusCode::BAD_GATEWAY
            }
            TaskError::Journal(_)
            | TaskError::Corrupt(..)
            | TaskError::Failover { .. }
            | TaskError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: err.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.status.as_u16(),
            message: self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}
