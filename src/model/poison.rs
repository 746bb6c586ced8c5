//! Poison: a source message or a journal row that cannot be replicated, and the operator's
//! decision to move past one.
//!
//! Nothing is skipped without that decision: a task meets a poison, stops, and names it (where,
//! at which source timestamp, why). `task skip` approves exactly that one; a task created with
//! `skip_poison` approves every one in advance (each is still logged and counted).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{MessageId, RowPosition};

/// Where a poison sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoisonAt {
    /// A message of a source channel that does not decode, or is not a usable Milvus change.
    Message { channel: String, id: MessageId },
    /// A journal row the target refused for a reason retrying cannot change.
    Row {
        vchannel: String,
        position: RowPosition,
    },
}

impl fmt::Display for PoisonAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoisonAt::Message { channel, id } => write!(f, "message {id} of channel {channel}"),
            PoisonAt::Row { vchannel, position } => write!(
                f,
                "journal row ts={} seq={} of vchannel {vchannel}",
                position.ts, position.seq
            ),
        }
    }
}

/// A poison met by a task: where, the source timestamp when it has one, and the error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Poison {
    pub at: PoisonAt,
    /// The message's source timestamp; None for a message that does not decode.
    pub ts: Option<u64>,
    pub error: String,
}

impl fmt::Display for Poison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.at)?;
        if let Some(ts) = self.ts {
            write!(f, " (source ts {ts})")?;
        }
        write!(f, ": {}", self.error)
    }
}

/// Which poisons a run may move past.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipPolicy {
    /// The task was created with `skip_poison`: every poison is passed over (logged, counted).
    pub every: bool,
    /// The one poison an operator approved with `task skip`.
    pub approved: Option<PoisonAt>,
}

impl SkipPolicy {
    pub fn allows(&self, at: &PoisonAt) -> bool {
        self.every || self.approved.as_ref() == Some(at)
    }
}
