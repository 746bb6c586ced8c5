//! Where a reader is on its channel, for each message queue, and the redelivery rule.
//!
//! The rule ([`MqPosition::admits`]): a message is staged only if its id is past the channel's
//! stored position. Kafka offsets and Pulsar MessageIds both only grow along a topic, so a
//! message at or before the position was read already (staged, or passed over as unusable) and
//! a broker that delivers it again (Kafka re-fetch, Pulsar redelivery after a reconnect or an
//! ack timeout) cannot get it staged twice.
//!
//! Stored as JSON in the journal's `source_offsets` table; [`MqPosition`] variants are appended,
//! never reordered or changed, so older journals keep decoding.

use std::cmp::Ordering;
use std::fmt;

use pulsar::message::proto::MessageIdData;
use serde::{Deserialize, Serialize};

/// The message queue a source writes to, which decides what a position's `msgID` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqKind {
    Kafka,
    Pulsar,
}

impl fmt::Display for MqKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MqKind::Kafka => "Kafka",
            MqKind::Pulsar => "Pulsar",
        })
    }
}

/// A message queue position: what the reader stages next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MqPosition {
    /// The next Kafka offset to stage.
    Kafka { next_offset: i64 },
    /// Stage messages after `from`, or at it too when `inclusive` (a start position Milvus
    /// recorded is the id of a message that must itself be read).
    Pulsar { from: PulsarId, inclusive: bool },
}

/// A Pulsar MessageId. Milvus writes each channel to a non-partitioned topic, so `partition`
/// is -1 there; it is kept to tell ids of different partitions apart, never to order them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PulsarId {
    pub ledger: u64,
    pub entry: u64,
    /// Index within a batch entry; -1 for a message sent without batching.
    pub batch: i32,
    pub partition: i32,
}

impl PulsarId {
    /// Before every message of a topic: `Pulsar { from: EARLIEST, inclusive: true }` reads all
    /// it retains.
    pub const EARLIEST: PulsarId = PulsarId {
        ledger: 0,
        entry: 0,
        batch: -1,
        partition: -1,
    };

    /// Order along one topic: ledger, then entry, then batch index. Ledger ids grow as the
    /// broker rolls ledgers, entries within a ledger, batch indexes within an entry.
    pub fn cmp_on_topic(&self, other: &PulsarId) -> Ordering {
        (self.ledger, self.entry, self.batch).cmp(&(other.ledger, other.entry, other.batch))
    }
}

impl fmt::Display for PulsarId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ledger={} entry={} batch={} partition={}",
            self.ledger, self.entry, self.batch, self.partition
        )
    }
}

/// The id of one fetched message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum MessageId {
    Kafka(i64),
    Pulsar(PulsarId),
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageId::Kafka(offset) => write!(f, "offset={offset}"),
            MessageId::Pulsar(id) => id.fmt(f),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a {message} message id cannot be compared with the stored position {position}")]
pub struct PositionMismatch {
    pub message: &'static str,
    pub position: MqPosition,
}

impl MqPosition {
    /// The redelivery rule: whether a message with this id is new to the channel and may be
    /// staged. An id of the other queue's kind is an error (a journal from another source).
    pub fn admits(&self, id: &MessageId) -> Result<bool, PositionMismatch> {
        match (self, id) {
            (MqPosition::Kafka { next_offset }, MessageId::Kafka(offset)) => {
                Ok(offset >= next_offset)
            }
            (MqPosition::Pulsar { from, inclusive }, MessageId::Pulsar(id)) => {
                Ok(
                    match (id.ledger, id.entry).cmp(&(from.ledger, from.entry)) {
                        Ordering::Greater => true,
                        Ordering::Less => false,
                        // Batch index -1 stands for the whole entry: clients and brokers disagree
                        // on writing -1 or 0 for a message sent without batching (a broker's
                        // newest id says -1, the same message is delivered with 0).
                        Ordering::Equal if from.batch < 0 => *inclusive,
                        Ordering::Equal => match id.batch.max(0).cmp(&from.batch) {
                            Ordering::Greater => true,
                            Ordering::Equal => *inclusive,
                            Ordering::Less => false,
                        },
                    },
                )
            }
            (position, MessageId::Kafka(_)) => Err(PositionMismatch {
                message: "Kafka",
                position: *position,
            }),
            (position, MessageId::Pulsar(_)) => Err(PositionMismatch {
                message: "Pulsar",
                position: *position,
            }),
        }
    }

    /// Before anything a channel of `kind` will ever hold: where a channel created after its
    /// task is read from, and everything is new.
    pub fn beginning(kind: MqKind) -> MqPosition {
        match kind {
            MqKind::Kafka => MqPosition::Kafka { next_offset: 0 },
            MqKind::Pulsar => MqPosition::Pulsar {
                from: PulsarId::EARLIEST,
                inclusive: true,
            },
        }
    }

    /// Which queue the position is of.
    pub fn kind(&self) -> MqKind {
        match self {
            MqPosition::Kafka { .. } => MqKind::Kafka,
            MqPosition::Pulsar { .. } => MqKind::Pulsar,
        }
    }

    /// Which of two positions of one channel reads more: the earlier one, which admits every
    /// message the other does. None for positions of different queues. A Pulsar position from
    /// a message comes before the one after it.
    pub fn cmp_on_channel(&self, other: &MqPosition) -> Option<Ordering> {
        match (self, other) {
            (MqPosition::Kafka { next_offset: a }, MqPosition::Kafka { next_offset: b }) => {
                Some(a.cmp(b))
            }
            (
                MqPosition::Pulsar {
                    from: a,
                    inclusive: ia,
                },
                MqPosition::Pulsar {
                    from: b,
                    inclusive: ib,
                },
            ) => Some(first_admitted(a, *ia).cmp(&first_admitted(b, *ib))),
            _ => None,
        }
    }

    /// The position right after a message that was read.
    pub fn after(id: &MessageId) -> MqPosition {
        match id {
            MessageId::Kafka(offset) => MqPosition::Kafka {
                next_offset: offset + 1,
            },
            MessageId::Pulsar(id) => MqPosition::Pulsar {
                from: *id,
                inclusive: false,
            },
        }
    }
}

/// The first message a Pulsar position admits, by the rule of [`MqPosition::admits`]: its
/// entry, then the first batch index of that entry (batch -1 stands for the whole entry: from
/// it, index 0 on; after it, none). Ordering by the batch index alone put the position after
/// an entry named with -1 before the one from the same entry's index 0, which it does not
/// admit.
fn first_admitted(from: &PulsarId, inclusive: bool) -> (u64, u64, i64) {
    let batch = i64::from(from.batch);
    let first = match (batch < 0, inclusive) {
        (true, true) => 0,
        (true, false) => i64::MAX,
        (false, true) => batch,
        (false, false) => batch + 1,
    };
    (from.ledger, from.entry, first)
}

impl fmt::Display for MqPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MqPosition::Kafka { next_offset } => write!(f, "kafka next_offset={next_offset}"),
            MqPosition::Pulsar { from, inclusive } => write!(
                f,
                "pulsar {} {from}",
                if *inclusive { "from" } else { "after" }
            ),
        }
    }
}

/// Where a row sits within its vchannel: source timestamp, then the reader's sequence number.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct RowPosition {
    pub ts: u64,
    pub seq: u64,
}

/// A reader's state on one physical channel, staged with its rows in one journal transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOffset {
    pub next: MqPosition,
    /// Newest TimeTick seen: every message of this channel with a timestamp at or below it has
    /// been staged (Milvus stamps a channel's messages in increasing order before its tick).
    pub tick: u64,
    /// Next sequence number for a staged row; never reused, so positions of deleted (applied)
    /// rows can never be taken again by new rows of the same timestamp.
    pub next_seq: u64,
    /// The fingerprint (xxh3) of the message read last before `next`, when a reader read one:
    /// a later run reads that message again and compares, so a topic deleted and created
    /// again, grown past the position meanwhile, is not taken for the one the position was
    /// taken on. Staged with `next`, so the two always agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
}

/// The metadata watcher's state on the source's etcd, staged with its rows in one journal
/// transaction, like a reader's [`SourceOffset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaOffset {
    /// The first etcd revision not read yet.
    pub next_revision: i64,
    /// Every change of the metadata stamped at or below this source timestamp is staged.
    pub tick: u64,
    /// Next sequence number for a staged row (as in [`SourceOffset`]).
    pub next_seq: u64,
}

/// A Pulsar MessageId as the journal keeps it.
pub fn pulsar_id(id: &MessageIdData) -> PulsarId {
    PulsarId {
        ledger: id.ledger_id,
        entry: id.entry_id,
        batch: id.batch_index.unwrap_or(-1),
        partition: id.partition.unwrap_or(-1),
    }
}

pub fn message_id_data(id: &PulsarId) -> MessageIdData {
    MessageIdData {
        ledger_id: id.ledger,
        entry_id: id.entry,
        partition: Some(id.partition),
        batch_index: Some(id.batch),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ledger: u64, entry: u64, batch: i32) -> PulsarId {
        PulsarId {
            ledger,
            entry,
            batch,
            partition: -1,
        }
    }

    fn after(from: PulsarId) -> MqPosition {
        MqPosition::Pulsar {
            from,
            inclusive: false,
        }
    }

    #[test]
    fn pulsar_ids_order_by_ledger_then_entry_then_batch_index() {
        let mut ids = vec![
            id(7, 0, -1),
            id(5, 9, 2),
            id(5, 9, -1),
            id(5, 10, 0),
            id(5, 9, 0),
        ];
        ids.sort_by(PulsarId::cmp_on_topic);
        assert_eq!(
            ids,
            [
                id(5, 9, -1),
                id(5, 9, 0),
                id(5, 9, 2),
                id(5, 10, 0),
                id(7, 0, -1)
            ]
        );
    }

    #[test]
    fn of_two_pulsar_positions_the_earlier_admits_every_message_the_later_does() {
        let from = |ledger, entry, batch| MqPosition::Pulsar {
            from: id(ledger, entry, batch),
            inclusive: true,
        };
        // After an entry named without a batch index, nothing of that entry is new: that
        // reads less than from its index 0 (the fuzz target mq_position found them reversed).
        assert_eq!(
            after(id(5, 9, -1)).cmp_on_channel(&from(5, 9, 0)),
            Some(Ordering::Greater)
        );
        assert_eq!(
            after(id(5, 9, -1)).cmp_on_channel(&from(5, 10, -1)),
            Some(Ordering::Less)
        );
        // One message named two ways is one position.
        assert_eq!(
            from(5, 9, -1).cmp_on_channel(&from(5, 9, 0)),
            Some(Ordering::Equal)
        );
        assert_eq!(
            after(id(5, 9, 2)).cmp_on_channel(&from(5, 9, 3)),
            Some(Ordering::Equal)
        );
        assert_eq!(
            from(5, 9, 2).cmp_on_channel(&after(id(5, 9, 2))),
            Some(Ordering::Less)
        );
        let positions = [
            from(5, 9, -1),
            after(id(5, 9, -1)),
            from(5, 9, 1),
            after(id(5, 9, 1)),
            after(id(5, 8, 3)),
            from(5, 10, 0),
        ];
        let messages = [
            id(5, 8, 3),
            id(5, 9, -1),
            id(5, 9, 0),
            id(5, 9, 2),
            id(5, 10, 0),
        ];
        for p in &positions {
            for q in &positions {
                if p.cmp_on_channel(q) != Some(Ordering::Greater) {
                    for m in messages.map(MessageId::Pulsar) {
                        if q.admits(&m).unwrap() {
                            assert!(p.admits(&m).unwrap(), "{p} reads before {q}, not {m}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_pulsar_message_is_admitted_only_after_the_stored_position() {
        let position = after(id(5, 9, -1));
        let admits = |m| position.admits(&MessageId::Pulsar(m)).unwrap();
        assert!(!admits(id(5, 9, -1)), "the last message read, redelivered");
        assert!(!admits(id(5, 3, -1)), "an older entry");
        assert!(!admits(id(4, 100, -1)), "an older ledger");
        assert!(admits(id(5, 10, -1)));
        assert!(admits(id(6, 0, -1)), "a new ledger starts at entry 0");
    }

    #[test]
    fn after_an_entry_named_without_a_batch_index_nothing_of_that_entry_is_new() {
        // What a `latest` start holds: the broker's newest id, which names no batch index,
        // while the reader gets that message with index 0. Reading it would stage a message
        // from before the task's start.
        let position = after(id(3, 614, -1));
        let admits = |m| position.admits(&MessageId::Pulsar(m)).unwrap();
        assert!(!admits(id(3, 614, 0)));
        assert!(!admits(id(3, 614, 1)));
        assert!(admits(id(3, 615, 0)));
        // And the other way round: read as index 0, redelivered without one.
        assert!(
            !after(id(3, 614, 0))
                .admits(&MessageId::Pulsar(id(3, 614, -1)))
                .unwrap()
        );
    }

    #[test]
    fn within_a_batch_entry_only_later_indexes_are_new() {
        let position = after(id(5, 9, 1));
        let admits = |m| position.admits(&MessageId::Pulsar(m)).unwrap();
        assert!(!admits(id(5, 9, 0)));
        assert!(!admits(id(5, 9, 1)));
        assert!(admits(id(5, 9, 2)));
    }

    #[test]
    fn a_start_position_admits_its_own_message() {
        let start = MqPosition::Pulsar {
            from: id(5, 9, -1),
            inclusive: true,
        };
        assert!(start.admits(&MessageId::Pulsar(id(5, 9, -1))).unwrap());
        assert!(!start.admits(&MessageId::Pulsar(id(5, 8, -1))).unwrap());
        let earliest = MqPosition::Pulsar {
            from: PulsarId::EARLIEST,
            inclusive: true,
        };
        assert!(earliest.admits(&MessageId::Pulsar(id(0, 0, -1))).unwrap());
    }

    #[test]
    fn after_a_message_the_position_excludes_it() {
        let message = MessageId::Pulsar(id(5, 9, -1));
        let next = MqPosition::after(&message);
        assert!(!next.admits(&message).unwrap());
        assert_eq!(
            MqPosition::after(&MessageId::Kafka(41)),
            MqPosition::Kafka { next_offset: 42 }
        );
        assert!(
            MqPosition::Kafka { next_offset: 42 }
                .admits(&MessageId::Kafka(42))
                .unwrap()
        );
        assert!(
            !MqPosition::Kafka { next_offset: 42 }
                .admits(&MessageId::Kafka(41))
                .unwrap()
        );
    }

    #[test]
    fn an_id_of_the_other_queue_is_an_error() {
        let kafka = MqPosition::Kafka { next_offset: 1 };
        assert!(kafka.admits(&MessageId::Pulsar(id(1, 1, -1))).is_err());
        assert!(after(id(1, 1, -1)).admits(&MessageId::Kafka(1)).is_err());
    }

    #[test]
    fn positions_read_back_as_written_and_print_readably() {
        let position = after(id(5, 9, -1));
        let json = serde_json::to_string(&position).unwrap();
        assert_eq!(serde_json::from_str::<MqPosition>(&json).unwrap(), position);
        let kafka: MqPosition = serde_json::from_str(r#"{"Kafka":{"next_offset":3}}"#).unwrap();
        assert_eq!(kafka, MqPosition::Kafka { next_offset: 3 });
        assert_eq!(
            position.to_string(),
            "pulsar after ledger=5 entry=9 batch=-1 partition=-1"
        );
    }
}
