//! In a group of appliances (`[group]`), where a call about a task is answered: a change to a
//! task another member owns is forwarded to that member, whose answer is this one's (a client
//! needs to follow no redirect, and the owner's lifecycle lock orders it with every other
//! call). Reads are answered here, from the group's records.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::task::Supervisor;

/// What a forwarded request may carry: as much as any request the API takes.
const MAX_FORWARDED_BYTES: usize = 64 << 20;
/// A switchover or failover answers once done: allow it the longest `--timeout` and more.
const OWNER_ANSWERS_WITHIN: Duration = Duration::from_secs(900);

pub async fn to_the_owner(
    State(supervisor): State<Arc<Supervisor>>,
    request: Request,
    next: Next,
) -> Response {
    let id = request
        .uri()
        .path()
        .strip_prefix("/v1/tasks/")
        .and_then(|rest| rest.split('/').next())
        .map(|id| {
            percent_encoding::percent_decode_str(id)
                .decode_utf8_lossy()
                .into_owned()
        });
    let owner = match (request.method(), id) {
        (&axum::http::Method::GET, _) | (_, None) => None,
        (_, Some(id)) => supervisor.owned_elsewhere(&id),
    };
    match owner {
        Some(owner) if !owner.url.is_empty() => {
            forward(&owner.url, request)
                .await
                .unwrap_or_else(|message| {
                    ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        format!(
                            "the task's owner, member {} ({}): {message}",
                            owner.name, owner.url
                        ),
                    )
                    .into_response()
                })
        }
        _ => next.run(request).await,
    }
}

async fn forward(owner_url: &str, request: Request) -> Result<Response, String> {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, MAX_FORWARDED_BYTES)
        .await
        .map_err(|e| format!("the request's body: {e}"))?;
    let url = format!(
        "{}{}",
        owner_url.trim_end_matches('/'),
        parts.uri.path_and_query().map_or("", |p| p.as_str())
    );
    let pass = |name: header::HeaderName| {
        parts
            .headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .map(|v| (name, v.to_owned()))
    };
    let headers: Vec<_> = [header::AUTHORIZATION, header::CONTENT_TYPE]
        .into_iter()
        .filter_map(pass)
        .collect();
    let method = parts.method.clone();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_recv_response(Some(OWNER_ANSWERS_WITHIN))
            .build()
            .into();
        let mut call = ureq::http::Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            call = call.header(name, value);
        }
        let call = call.body(body.to_vec()).map_err(|e| e.to_string())?;
        let mut answer = agent.run(call).map_err(|e| e.to_string())?;
        let status = answer.status();
        let kind = answer.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = answer
            .body_mut()
            .with_config()
            .limit(MAX_FORWARDED_BYTES as u64)
            .read_to_vec()
            .map_err(|e| e.to_string())?;
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() =
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if let Some(kind) = kind.and_then(|k| HeaderValue::from_bytes(k.as_bytes()).ok()) {
            response.headers_mut().insert(header::CONTENT_TYPE, kind);
        }
        Ok(response)
    })
    .await
    .map_err(|e| e.to_string())?
}
