//! The HTTP surface: the upstream-compatible `POST /cdc`, REST on `/v1/tasks`, the status page
//! at `/` (with `/v1/status`), `/metrics` and `/healthz`.
//!
//! `/cdc` keeps the reference Go CDC's shapes: a body `{"request_type", "request_data"}` and a reply
//! `{"code":200,"data":...}` or `{"code":4xx|5xx,"message":...}`. Every error is built in one
//! place, [`ApiError`], and secrets never leave in a reply.

mod cdc;
mod rest;
mod tasks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::task::{Supervisor, TaskError};

/// The API. With a `token`, every route but `/healthz` needs `Authorization: Bearer <token>`.
pub fn router(supervisor: Arc<Supervisor>, token: Option<String>) -> Router {
    let api = Router::new()
        .route("/cdc", post(cdc::handle))
        .route("/v1/tasks", get(rest::list).post(rest::create))
        .route("/v1/tasks/{id}", get(rest::get).delete(rest::delete))
        .route("/v1/tasks/{id}/pause", post(rest::pause))
        .route("/v1/tasks/{id}/resume", post(rest::resume))
        .route("/v1/tasks/{id}/positions", get(rest::positions))
        .route("/v1/status", get(rest::status))
        .route("/metrics", get(metrics))
        .with_state(supervisor);
    let api = match token {
        Some(token) => api.layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        )),
        None => api,
    };
    // The page holds no data (it fetches /v1/status, with the token): served to anyone.
    api.route("/healthz", get(|| async { "OK" }))
        .route("/", get(|| async { Html(include_str!("status.html")) }))
}

async fn metrics(State(supervisor): State<Arc<Supervisor>>) -> Result<String, ApiError> {
    let now_ms = crate::task::now_ms();
    crate::metrics::render(supervisor.journal(), &supervisor.tasks()?, now_ms)
        .map_err(|e| ApiError::internal(format!("metrics: {e}")))
}

async fn require_token(State(token): State<Arc<String>>, request: Request, next: Next) -> Response {
    use subtle::ConstantTimeEq;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if bool::from(p.as_bytes().ct_eq(token.as_bytes())) => next.run(request).await,
        _ => {
            let mut response = ApiError {
                status: StatusCode::UNAUTHORIZED,
                message: "missing or wrong bearer token (Authorization: Bearer <token>)".into(),
            }
            .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
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
            TaskError::Exists(_) => StatusCode::CONFLICT,
            TaskError::Unsupported(_) => StatusCode::BAD_REQUEST,
            TaskError::StartNotRetained { .. } => StatusCode::CONFLICT,
            TaskError::Meta(_) | TaskError::Kafka(_) => StatusCode::BAD_GATEWAY,
            TaskError::Journal(_) | TaskError::Corrupt(..) | TaskError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self {
            status,
            message: err.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}
