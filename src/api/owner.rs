//! In a group of appliances (`[group]`), where a call about a task is answered.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::task::Supervisor;

/// In a group, a change to a task another member owns is redirected there (307: the method
/// and body go along); reads are answered here, from the group's records.
pub async fn to_the_owner(
    State(supervisor): State<Arc<Supervisor>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let id = path
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
            let to = format!(
                "{}{}",
                owner.url.trim_end_matches('/'),
                request.uri().path_and_query().map_or(path, |p| p.as_str())
            );
            axum::response::Redirect::temporary(&to).into_response()
        }
        _ => next.run(request).await,
    }
}
