//! Whether a Milvus refuses writes to a collection because of its write fence
//! (`quotaAndLimits.limitWriting.forceDeny`): its rate limiter answers `ForceDeny` before the
//! request is even read, so the probe is an insert of no rows, which writes nothing either way.

use milvus::proto::common::ErrorCode;
use milvus::proto::milvus::InsertRequest;

use super::Client;
use super::ReadError;
use crate::model::CollectionRef;

/// `Status.code` of `ErrorCode::ForceDeny` in Milvus versions that answer with codes.
const FORCE_DENY_CODE: i32 = 9;

/// Whether the collection's writes are refused by the fence now. Milvus 2.3 says ForceDeny in
/// `error_code` (deprecated upstream), later versions in `code`: both are read.
#[allow(deprecated)]
pub async fn fenced(client: &Client, c: &CollectionRef) -> Result<bool, ReadError> {
    let request = InsertRequest {
        db_name: c.db_name.clone(),
        collection_name: c.name.clone(),
        num_rows: 0,
        ..Default::default()
    };
    let reply = client
        .clone()
        .insert(request)
        .await
        .map_err(|status| ReadError {
            role: "source",
            collection: c.name.clone(),
            reason: format!("Insert (a fence probe of no rows): {}", status.message()),
        })?;
    Ok(reply
        .into_inner()
        .status
        .is_some_and(|s| s.error_code == ErrorCode::ForceDeny as i32 || s.code == FORCE_DENY_CODE))
}
