//! The vocabulary every stage shares: what a change is, where a reader or the applier stands,
//! how channels are named, and which collections a task covers.
//!
//! It depends on nothing else in the crate (a check in `tests/layering.rs` holds it to that), so
//! the stages (`source`, `journal`, `apply`) can all speak it without knowing one another.

mod ca;
mod change;
mod channel;
mod msg_position;
mod poison;
mod position;
mod scope;
mod secret;
mod snapshot;

pub use ca::{CaFile, CaFileError};
pub use change::{
    Change, CollectionRef, DEFAULT_PARTITION, Ddl, DdlEvent, DeleteBatch, EncodedColumn,
    InsertBatch, Operation, PrimaryKeys, ReplicatedKind, StagedChange, columns_bytes,
};
pub use channel::{
    is_event_channel, is_meta_channel, is_replicate_topic, meta_channel, parse_id, replicate_topic,
    vchannel_collection_id, vchannel_pchannel,
};
pub use msg_position::{PULSAR_INCLUSIVE, PositionError, decode_position, encode_position};
pub use poison::{Poison, PoisonAt, SkipPolicy};
pub use position::{
    MessageId, MetaOffset, MqKind, MqPosition, PositionMismatch, PulsarId, RowPosition,
    SourceOffset, message_id_data, pulsar_id,
};
pub use scope::{DEFAULT_DB, NameMapping, Scope, db_or_default};
pub use secret::{Secret, no_credentials_logged};
pub use snapshot::{CopyProgress, CopyState, PrimaryKey, Recopy};

/// Where a new task starts reading its channels, unless its create gives positions.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// Changes made after the task was created.
    #[default]
    Latest,
    /// Each in-scope collection from its start position in the source's etcd (its
    /// CreateCollection message), so collections that exist already are copied whole.
    Earliest,
    /// As `latest`, and the rows of the collections that exist already copied from the
    /// source's API first (a snapshot), however old they are.
    Snapshot,
    /// As `snapshot`, onto a target that holds rows already (an old primary come back): each
    /// collection is made equal to the source by difference, every row replaced or deleted on
    /// the target saved first (`snapshot::repair`).
    Repair,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The physical part of a Milvus hybrid timestamp (milliseconds << 18 | logical), in Unix
/// milliseconds.
pub fn physical_ms(ts: u64) -> u64 {
    ts >> 18
}

/// The physical part of a hybrid timestamp in RFC 3339, UTC, to the millisecond.
pub fn hybrid_time(ts: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(physical_ms(ts));
    humantime::format_rfc3339_millis(at).to_string()
}
