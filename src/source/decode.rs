//! Decoding one message-queue payload into a typed Milvus message.
//!
//! Every payload is one protobuf request. Its type is read first through the common header
//! (`MsgHeader { base: MsgBase }`, field 1 of every request), then the full request is decoded.

use milvus::proto::common::{MsgBase, MsgHeader, MsgType};
use milvus::proto::msg;
use prost::Message;

pub use crate::proto::passthrough::InsertMessage;

#[derive(Debug, Clone, PartialEq)]
pub enum SourceMessage {
    /// Columns stay encoded: they pass to the target as they are.
    Insert(InsertMessage),
    Delete(msg::DeleteRequest),
    CreateCollection(Box<msg::CreateCollectionRequest>),
    DropCollection(msg::DropCollectionRequest),
    CreatePartition(msg::CreatePartitionRequest),
    DropPartition(msg::DropPartitionRequest),
    TimeTick {
        ts: u64,
    },
    /// A well-formed message of a type replication does not use on DML channels.
    Ignored {
        msg_type: i32,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a Milvus message: {0}")]
    NotMilvus(String),
    #[error("message has no base header")]
    NoHeader,
    #[error("unknown message type {0}")]
    UnknownType(i32),
    #[error("malformed {kind} message: {reason}")]
    Malformed { kind: &'static str, reason: String },
}

fn body<M: Message + Default>(kind: &'static str, payload: &[u8]) -> Result<M, DecodeError> {
    M::decode(payload).map_err(|e| DecodeError::Malformed {
        kind,
        reason: e.to_string(),
    })
}

pub fn decode(payload: &[u8]) -> Result<SourceMessage, DecodeError> {
    let header = MsgHeader::decode(payload).map_err(|e| DecodeError::NotMilvus(e.to_string()))?;
    let base = header.base.ok_or(DecodeError::NoHeader)?;
    let msg_type =
        MsgType::try_from(base.msg_type).map_err(|_| DecodeError::UnknownType(base.msg_type))?;
    Ok(match msg_type {
        MsgType::Insert => SourceMessage::Insert(body("Insert", payload)?),
        MsgType::Delete => SourceMessage::Delete(body("Delete", payload)?),
        MsgType::CreateCollection => {
            SourceMessage::CreateCollection(Box::new(body("CreateCollection", payload)?))
        }
        MsgType::DropCollection => SourceMessage::DropCollection(body("DropCollection", payload)?),
        MsgType::CreatePartition => {
            SourceMessage::CreatePartition(body("CreatePartition", payload)?)
        }
        MsgType::DropPartition => SourceMessage::DropPartition(body("DropPartition", payload)?),
        MsgType::TimeTick => SourceMessage::TimeTick { ts: base.timestamp },
        MsgType::Undefined => return Err(DecodeError::UnknownType(0)),
        other => SourceMessage::Ignored {
            msg_type: other as i32,
        },
    })
}

/// The timestamp a message is ordered by: its rows' stamp (all rows of one message share it),
/// else the base stamp.
pub fn timestamp(message: &SourceMessage) -> u64 {
    fn base_ts(base: &Option<MsgBase>) -> u64 {
        base.as_ref().map_or(0, |b| b.timestamp)
    }
    match message {
        SourceMessage::Insert(m) => m
            .timestamps
            .iter()
            .copied()
            .max()
            .unwrap_or_else(|| MsgBase::decode(m.base.as_slice()).map_or(0, |b| b.timestamp)),
        SourceMessage::Delete(m) => m
            .timestamps
            .iter()
            .copied()
            .max()
            .unwrap_or_else(|| base_ts(&m.base)),
        SourceMessage::CreateCollection(m) => base_ts(&m.base),
        SourceMessage::DropCollection(m) => base_ts(&m.base),
        SourceMessage::CreatePartition(m) => base_ts(&m.base),
        SourceMessage::DropPartition(m) => base_ts(&m.base),
        SourceMessage::TimeTick { ts } => *ts,
        SourceMessage::Ignored { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use milvus::proto::schema::{FieldData, LongArray, ScalarField, field_data, scalar_field};

    fn base(msg_type: MsgType, timestamp: u64) -> Option<MsgBase> {
        Some(MsgBase {
            msg_type: msg_type as i32,
            timestamp,
            ..Default::default()
        })
    }

    #[test]
    fn a_time_tick_carries_its_base_timestamp() {
        let bytes = msg::TimeTickMsg {
            base: base(MsgType::TimeTick, 42),
        }
        .encode_to_vec();
        assert_eq!(decode(&bytes), Ok(SourceMessage::TimeTick { ts: 42 }));
    }

    #[test]
    fn an_insert_keeps_its_columns_exactly_as_milvus_encoded_them() {
        let column = FieldData {
            field_name: "id".into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::LongData(LongArray { data: vec![4, 5] })),
                ..Default::default()
            })),
            ..Default::default()
        };
        let insert = msg::InsertRequest {
            base: base(MsgType::Insert, 1),
            shard_name: "by-dev-rootcoord-dml_0_1v0".into(),
            db_name: "db".into(),
            collection_name: "c".into(),
            partition_name: "p".into(),
            collection_id: 1,
            timestamps: vec![77, 77],
            fields_data: vec![column.clone()],
            num_rows: 2,
            ..Default::default()
        };
        let Ok(SourceMessage::Insert(m)) = decode(&insert.encode_to_vec()) else {
            panic!("not an insert");
        };
        assert_eq!(
            (
                m.shard_name.as_str(),
                m.db_name.as_str(),
                m.collection_name.as_str()
            ),
            ("by-dev-rootcoord-dml_0_1v0", "db", "c")
        );
        assert_eq!(
            (m.partition_name.as_str(), m.collection_id, m.num_rows),
            ("p", 1, 2)
        );
        assert_eq!(m.fields_data, vec![column.encode_to_vec()]);
        assert_eq!(timestamp(&SourceMessage::Insert(m)), 77);
    }

    #[test]
    fn an_insert_without_row_timestamps_takes_its_base_timestamp() {
        let insert = msg::InsertRequest {
            base: base(MsgType::Insert, 31),
            ..Default::default()
        };
        let decoded = decode(&insert.encode_to_vec()).unwrap();
        assert_eq!(timestamp(&decoded), 31);
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert!(matches!(
            decode(b"\xff\xff\xff"),
            Err(DecodeError::NotMilvus(_))
        ));
        assert_eq!(decode(b""), Err(DecodeError::NoHeader));
        let unknown = msg::TimeTickMsg {
            base: Some(MsgBase {
                msg_type: 99_999,
                ..Default::default()
            }),
        };
        assert_eq!(
            decode(&unknown.encode_to_vec()),
            Err(DecodeError::UnknownType(99_999))
        );
        let insert = msg::InsertRequest {
            base: base(MsgType::Insert, 1),
            num_rows: 3,
            ..Default::default()
        };
        let bytes = insert.encode_to_vec();
        let truncated = &bytes[..bytes.len() - 1];
        assert!(
            decode(truncated).is_err(),
            "a truncated message must not decode"
        );
    }

    #[test]
    fn known_types_replication_does_not_use_are_ignored() {
        let bytes = msg::TimeTickMsg {
            base: base(MsgType::Flush, 5),
        }
        .encode_to_vec();
        assert_eq!(
            decode(&bytes),
            Ok(SourceMessage::Ignored {
                msg_type: MsgType::Flush as i32
            })
        );
    }
}
