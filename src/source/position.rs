//! Source positions as the reference CDC exchanges them: a base64 `msg.MsgPosition` whose
//! `msgID` is the Kafka offset (8 bytes, little endian, as Milvus writes it in etcd).
//!
//! A position here is where reading starts: the next message to read. The `position` a task
//! reports can therefore be handed to a new task's create to continue exactly where it is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use milvus::proto::msg::MsgPosition;
use prost::Message;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("position of {channel}: {reason}")]
pub struct PositionError {
    channel: String,
    reason: String,
}

/// The next Kafka offset to read on `channel`, from its base64 `MsgPosition`.
pub fn decode_kafka_position(channel: &str, text: &str) -> Result<i64, PositionError> {
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
    let id: [u8; 8] = position.msg_id.as_slice().try_into().map_err(|_| {
        error(format!(
            "msgID has {} bytes, a Kafka offset has 8",
            position.msg_id.len()
        ))
    })?;
    let offset = i64::from_le_bytes(id);
    if offset < 0 {
        return Err(error(format!("negative offset {offset}")));
    }
    Ok(offset)
}

/// The base64 `MsgPosition` of `next_offset` on `channel`; `timestamp` is the newest TimeTick
/// read there.
pub fn encode_kafka_position(channel: &str, next_offset: i64, timestamp: u64) -> String {
    let position = MsgPosition {
        channel_name: channel.to_owned(),
        msg_id: next_offset.to_le_bytes().to_vec(),
        timestamp,
        ..Default::default()
    };
    STANDARD.encode(position.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: &str = "by-dev-rootcoord-dml_0";

    #[test]
    fn a_reported_position_starts_a_task_at_the_same_offset() {
        let text = encode_kafka_position(P0, 1234, 99);
        assert_eq!(decode_kafka_position(P0, &text), Ok(1234));
    }

    #[test]
    fn a_position_of_another_channel_or_not_an_offset_is_refused() {
        let other = encode_kafka_position("by-dev-rootcoord-dml_1", 5, 0);
        let err = decode_kafka_position(P0, &other).unwrap_err();
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
        assert!(decode_kafka_position(P0, &short).is_err());
        assert!(decode_kafka_position(P0, "%%%").is_err());
    }
}
