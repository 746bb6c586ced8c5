//! Source positions as the reference CDC exchanges them: a base64 `msg.MsgPosition` per
//! physical channel. What its `msgID` holds depends on the message queue:
//!
//! - Kafka: the next offset to read, 8 bytes little endian (as Milvus writes an offset in etcd);
//! - Pulsar: the serialized `MessageIdData` of the last message read; reading continues after
//!   it. A position that has read nothing on its channel yet names the first message to read
//!   instead, and says so with `msgGroup` = [`PULSAR_INCLUSIVE`] (a Pulsar id cannot name "the
//!   message before this one").
//!
//! So the `position` a task reports can be handed to a new task's create to continue exactly
//! where it is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use milvus::proto::msg::MsgPosition;
use prost::Message;
use pulsar::message::proto::MessageIdData;

use super::position::{MqKind, MqPosition, message_id_data, pulsar_id};

/// `msgGroup` of a Pulsar position whose message is itself to be read.
pub const PULSAR_INCLUSIVE: &str = "milvus-cdc:inclusive";

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("position of {channel}: {reason}")]
pub struct PositionError {
    channel: String,
    reason: String,
}

/// Where to read `channel` from, given its base64 `MsgPosition`.
pub fn decode_position(channel: &str, text: &str, mq: MqKind) -> Result<MqPosition, PositionError> {
    let error = |reason: String| PositionError {
        channel: channel.to_owned(),
        reason,
    };
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| error(format!("not base64: {e}")))?;
    let position = MsgPosition::decode(bytes.as_slice())
        .map_err(|e| error(format!("not a MsgPosition: {e}")))?;
    if !position.channel_name.is_empty() && position.channel_name != channel {
        return Err(error(format!(
            "the position is of channel {}",
            position.channel_name
        )));
    }
    match mq {
        MqKind::Kafka => {
            let id: [u8; 8] = position.msg_id.as_slice().try_into().map_err(|_| {
                error(format!(
                    "msgID has {} bytes, a Kafka offset has 8",
                    position.msg_id.len()
                ))
            })?;
            let next_offset = i64::from_le_bytes(id);
            if next_offset < 0 {
                return Err(error(format!("negative offset {next_offset}")));
            }
            Ok(MqPosition::Kafka { next_offset })
        }
        MqKind::Pulsar => {
            if position.msg_id.is_empty() {
                return Err(error(
                    "msgID is empty, a Pulsar MessageIdData is not".into(),
                ));
            }
            let id = MessageIdData::decode(position.msg_id.as_slice())
                .map_err(|e| error(format!("msgID is not a Pulsar MessageIdData: {e}")))?;
            Ok(MqPosition::Pulsar {
                from: pulsar_id(&id),
                inclusive: position.msg_group == PULSAR_INCLUSIVE,
            })
        }
    }
}

/// The base64 `MsgPosition` of `position` on `channel`; `timestamp` is the newest TimeTick read
/// there.
pub fn encode_position(channel: &str, position: &MqPosition, timestamp: u64) -> String {
    let (msg_id, msg_group) = match position {
        MqPosition::Kafka { next_offset } => (next_offset.to_le_bytes().to_vec(), ""),
        MqPosition::Pulsar { from, inclusive } => (
            message_id_data(from).encode_to_vec(),
            if *inclusive { PULSAR_INCLUSIVE } else { "" },
        ),
    };
    let position = MsgPosition {
        channel_name: channel.to_owned(),
        msg_id,
        msg_group: msg_group.to_owned(),
        timestamp,
        ..Default::default()
    };
    STANDARD.encode(position.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageId, PulsarId};

    const P0: &str = "by-dev-rootcoord-dml_0";

    #[test]
    fn a_reported_kafka_position_starts_a_task_at_the_same_offset() {
        let position = MqPosition::Kafka { next_offset: 1234 };
        let text = encode_position(P0, &position, 99);
        assert_eq!(decode_position(P0, &text, MqKind::Kafka), Ok(position));
    }

    #[test]
    fn a_reported_pulsar_position_continues_after_the_same_message_or_from_it() {
        let id = PulsarId {
            ledger: 12,
            entry: 7,
            batch: 3,
            partition: -1,
        };
        for inclusive in [false, true] {
            let position = MqPosition::Pulsar {
                from: id,
                inclusive,
            };
            let text = encode_position(P0, &position, 99);
            let decoded = decode_position(P0, &text, MqKind::Pulsar).unwrap();
            assert_eq!(decoded, position);
            assert_eq!(
                decoded.admits(&MessageId::Pulsar(id)).unwrap(),
                inclusive,
                "the named message itself is read only by an inclusive position"
            );
        }
    }

    #[test]
    fn a_pulsar_id_without_a_batch_index_is_an_unbatched_message() {
        let bytes = MessageIdData {
            ledger_id: 5,
            entry_id: 9,
            ..Default::default()
        }
        .encode_to_vec();
        let text = STANDARD.encode(
            MsgPosition {
                msg_id: bytes,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        assert_eq!(
            decode_position(P0, &text, MqKind::Pulsar),
            Ok(MqPosition::Pulsar {
                from: PulsarId {
                    ledger: 5,
                    entry: 9,
                    batch: -1,
                    partition: -1
                },
                inclusive: false
            })
        );
    }

    #[test]
    fn a_position_of_another_channel_or_queue_is_refused() {
        let other = encode_position(
            "by-dev-rootcoord-dml_1",
            &MqPosition::Kafka { next_offset: 5 },
            0,
        );
        let err = decode_position(P0, &other, MqKind::Kafka).unwrap_err();
        assert_eq!(
            err.to_string(),
            "position of by-dev-rootcoord-dml_0: the position is of channel by-dev-rootcoord-dml_1"
        );
        let short = STANDARD.encode(
            MsgPosition {
                msg_id: vec![1, 2, 3],
                ..Default::default()
            }
            .encode_to_vec(),
        );
        assert!(decode_position(P0, &short, MqKind::Kafka).is_err());
        assert!(decode_position(P0, "%%%", MqKind::Kafka).is_err());
        let empty = STANDARD.encode(MsgPosition::default().encode_to_vec());
        assert_eq!(
            decode_position(P0, &empty, MqKind::Pulsar)
                .unwrap_err()
                .to_string(),
            "position of by-dev-rootcoord-dml_0: msgID is empty, a Pulsar MessageIdData is not"
        );
        // A Kafka offset's 8 bytes are not a MessageIdData (field 0 is invalid in protobuf).
        let kafka = encode_position(P0, &MqPosition::Kafka { next_offset: 0 }, 0);
        assert!(decode_position(P0, &kafka, MqKind::Pulsar).is_err());
    }
}
