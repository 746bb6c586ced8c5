//! Decoding one message-queue payload into a typed Milvus message.
//!
//! Every payload is one protobuf request. Its type is read first through the common header
//! (`MsgHeader { base: MsgBase }`, field 1 of every request), then the full request is decoded.

use milvus::proto::common::{MsgBase, MsgHeader, MsgType};
use milvus::proto::milvus as rpc;
use milvus::proto::msg;
use prost::Message;

use super::msg_kind::{Unhandled, unhandled};
use crate::model::ReplicatedKind;
pub use crate::proto::passthrough::InsertMessage;

/// What the proxy writes to `{prefix}-replicate-msg`: the public requests it executed, each
/// with a `base` carrying its type and timestamp.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicatedRequest {
    CreateIndex(rpc::CreateIndexRequest),
    DropIndex(rpc::DropIndexRequest),
    Load(rpc::LoadCollectionRequest),
    Release(rpc::ReleaseCollectionRequest),
    Flush(rpc::FlushRequest),
    CreateDatabase(rpc::CreateDatabaseRequest),
    DropDatabase(rpc::DropDatabaseRequest),
}

impl ReplicatedRequest {
    pub fn kind(&self) -> ReplicatedKind {
        match self {
            ReplicatedRequest::CreateIndex(_) => ReplicatedKind::CreateIndex,
            ReplicatedRequest::DropIndex(_) => ReplicatedKind::DropIndex,
            ReplicatedRequest::Load(_) => ReplicatedKind::Load,
            ReplicatedRequest::Release(_) => ReplicatedKind::Release,
            ReplicatedRequest::Flush(_) => ReplicatedKind::Flush,
            ReplicatedRequest::CreateDatabase(_) => ReplicatedKind::CreateDatabase,
            ReplicatedRequest::DropDatabase(_) => ReplicatedKind::DropDatabase,
        }
    }

    fn base(&self) -> &Option<MsgBase> {
        match self {
            ReplicatedRequest::CreateIndex(m) => &m.base,
            ReplicatedRequest::DropIndex(m) => &m.base,
            ReplicatedRequest::Load(m) => &m.base,
            ReplicatedRequest::Release(m) => &m.base,
            ReplicatedRequest::Flush(m) => &m.base,
            ReplicatedRequest::CreateDatabase(m) => &m.base,
            ReplicatedRequest::DropDatabase(m) => &m.base,
        }
    }

    pub fn db_name(&self) -> &str {
        match self {
            ReplicatedRequest::CreateIndex(m) => &m.db_name,
            ReplicatedRequest::DropIndex(m) => &m.db_name,
            ReplicatedRequest::Load(m) => &m.db_name,
            ReplicatedRequest::Release(m) => &m.db_name,
            ReplicatedRequest::Flush(m) => &m.db_name,
            ReplicatedRequest::CreateDatabase(m) => &m.db_name,
            ReplicatedRequest::DropDatabase(m) => &m.db_name,
        }
    }

    /// The collections the request acts on: one, several for a flush, none for a database.
    pub fn collection_names(&self) -> Vec<&str> {
        match self {
            ReplicatedRequest::CreateIndex(m) => vec![m.collection_name.as_str()],
            ReplicatedRequest::DropIndex(m) => vec![m.collection_name.as_str()],
            ReplicatedRequest::Load(m) => vec![m.collection_name.as_str()],
            ReplicatedRequest::Release(m) => vec![m.collection_name.as_str()],
            ReplicatedRequest::Flush(m) => m.collection_names.iter().map(String::as_str).collect(),
            ReplicatedRequest::CreateDatabase(_) | ReplicatedRequest::DropDatabase(_) => vec![],
        }
    }

    /// The same request for one collection, by its own name: a flush may name several (each
    /// collection's flush waits for that collection's data alone), and a request sent through
    /// an alias names the alias, which the target does not have.
    pub fn addressed_to(&self, collection: &str) -> ReplicatedRequest {
        let name = collection.to_owned();
        match self {
            ReplicatedRequest::CreateIndex(m) => {
                ReplicatedRequest::CreateIndex(rpc::CreateIndexRequest {
                    collection_name: name,
                    ..m.clone()
                })
            }
            ReplicatedRequest::DropIndex(m) => {
                ReplicatedRequest::DropIndex(rpc::DropIndexRequest {
                    collection_name: name,
                    ..m.clone()
                })
            }
            ReplicatedRequest::Load(m) => ReplicatedRequest::Load(rpc::LoadCollectionRequest {
                collection_name: name,
                ..m.clone()
            }),
            ReplicatedRequest::Release(m) => {
                ReplicatedRequest::Release(rpc::ReleaseCollectionRequest {
                    collection_name: name,
                    ..m.clone()
                })
            }
            ReplicatedRequest::Flush(m) => ReplicatedRequest::Flush(rpc::FlushRequest {
                collection_names: vec![name],
                ..m.clone()
            }),
            database @ (ReplicatedRequest::CreateDatabase(_)
            | ReplicatedRequest::DropDatabase(_)) => database.clone(),
        }
    }

    /// The public request's protobuf encoding.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ReplicatedRequest::CreateIndex(m) => m.encode_to_vec(),
            ReplicatedRequest::DropIndex(m) => m.encode_to_vec(),
            ReplicatedRequest::Load(m) => m.encode_to_vec(),
            ReplicatedRequest::Release(m) => m.encode_to_vec(),
            ReplicatedRequest::Flush(m) => m.encode_to_vec(),
            ReplicatedRequest::CreateDatabase(m) => m.encode_to_vec(),
            ReplicatedRequest::DropDatabase(m) => m.encode_to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceMessage {
    /// Columns stay encoded: they pass to the target as they are.
    Insert(InsertMessage),
    Delete(msg::DeleteRequest),
    CreateCollection(Box<msg::CreateCollectionRequest>),
    DropCollection(msg::DropCollectionRequest),
    CreatePartition(msg::CreatePartitionRequest),
    DropPartition(msg::DropPartitionRequest),
    /// Read from `{prefix}-replicate-msg`.
    Replicated(ReplicatedRequest),
    TimeTick {
        ts: u64,
    },
    /// A well-formed message of a type that carries nothing the target needs (see
    /// `msg_kind`).
    Ignored {
        msg_type: MsgType,
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
    #[error("message type {name} ({msg_type}) carries rows or DDL this version does not replicate")]
    NotReplicated { name: &'static str, msg_type: i32 },
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
        MsgType::CreateIndex => replicated(ReplicatedRequest::CreateIndex(body(
            "CreateIndex",
            payload,
        )?)),
        MsgType::DropIndex => replicated(ReplicatedRequest::DropIndex(body("DropIndex", payload)?)),
        MsgType::LoadCollection => {
            replicated(ReplicatedRequest::Load(body("LoadCollection", payload)?))
        }
        MsgType::ReleaseCollection => replicated(ReplicatedRequest::Release(body(
            "ReleaseCollection",
            payload,
        )?)),
        MsgType::Flush => replicated(ReplicatedRequest::Flush(body("Flush", payload)?)),
        MsgType::CreateDatabase => replicated(ReplicatedRequest::CreateDatabase(body(
            "CreateDatabase",
            payload,
        )?)),
        MsgType::DropDatabase => replicated(ReplicatedRequest::DropDatabase(body(
            "DropDatabase",
            payload,
        )?)),
        MsgType::Undefined => return Err(DecodeError::UnknownType(0)),
        other => match unhandled(other) {
            Unhandled::Harmless => SourceMessage::Ignored { msg_type: other },
            Unhandled::CarriesData => {
                return Err(DecodeError::NotReplicated {
                    name: other.as_str_name(),
                    msg_type: other as i32,
                });
            }
        },
    })
}

fn replicated(request: ReplicatedRequest) -> SourceMessage {
    SourceMessage::Replicated(request)
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
        SourceMessage::Replicated(r) => base_ts(r.base()),
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
            base: base(MsgType::ShowCollections, 5),
        }
        .encode_to_vec();
        assert_eq!(
            decode(&bytes),
            Ok(SourceMessage::Ignored {
                msg_type: MsgType::ShowCollections
            })
        );
    }

    #[test]
    fn a_known_type_that_carries_data_is_an_error_naming_the_type() {
        let bytes = msg::TimeTickMsg {
            base: base(MsgType::Upsert, 5),
        }
        .encode_to_vec();
        let err = decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::NotReplicated {
                name: "Upsert",
                msg_type: 404
            }
        );
        assert!(err.to_string().contains("Upsert"), "{err}");
    }

    use milvus::proto::common::KeyValuePair;

    fn replicated_from(bytes: Vec<u8>) -> ReplicatedRequest {
        match decode(&bytes) {
            Ok(SourceMessage::Replicated(request)) => request,
            other => panic!("expected a replicated request, got {other:?}"),
        }
    }

    fn kv(key: &str, value: &str) -> KeyValuePair {
        KeyValuePair {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn a_create_index_keeps_its_field_index_name_and_params() {
        let sent = rpc::CreateIndexRequest {
            base: base(MsgType::CreateIndex, 900),
            db_name: "default".into(),
            collection_name: "c".into(),
            field_name: "vec".into(),
            extra_params: vec![
                kv("index_type", "IVF_FLAT"),
                kv("metric_type", "L2"),
                kv("params", r#"{"nlist":16}"#),
            ],
            index_name: "idx".into(),
        };
        let decoded = replicated_from(sent.encode_to_vec());
        assert_eq!(decoded, ReplicatedRequest::CreateIndex(sent.clone()));
        assert_eq!(decoded.kind(), ReplicatedKind::CreateIndex);
        assert_eq!(decoded.collection_names(), ["c"]);
        assert_eq!(decoded.encode(), sent.encode_to_vec());
        assert_eq!(timestamp(&SourceMessage::Replicated(decoded)), 900);
    }

    #[test]
    fn each_replicate_msg_type_decodes_to_its_public_request() {
        let cases: Vec<(Vec<u8>, ReplicatedKind, Vec<&str>)> = vec![
            (
                rpc::DropIndexRequest {
                    base: base(MsgType::DropIndex, 1),
                    db_name: "default".into(),
                    collection_name: "c".into(),
                    field_name: "vec".into(),
                    index_name: "idx".into(),
                }
                .encode_to_vec(),
                ReplicatedKind::DropIndex,
                vec!["c"],
            ),
            (
                rpc::LoadCollectionRequest {
                    base: base(MsgType::LoadCollection, 2),
                    db_name: "default".into(),
                    collection_name: "c".into(),
                    replica_number: 1,
                    ..Default::default()
                }
                .encode_to_vec(),
                ReplicatedKind::Load,
                vec!["c"],
            ),
            (
                rpc::ReleaseCollectionRequest {
                    base: base(MsgType::ReleaseCollection, 3),
                    db_name: "default".into(),
                    collection_name: "c".into(),
                }
                .encode_to_vec(),
                ReplicatedKind::Release,
                vec!["c"],
            ),
            (
                rpc::FlushRequest {
                    base: base(MsgType::Flush, 4),
                    db_name: "default".into(),
                    collection_names: vec!["a".into(), "b".into()],
                }
                .encode_to_vec(),
                ReplicatedKind::Flush,
                vec!["a", "b"],
            ),
            (
                rpc::CreateDatabaseRequest {
                    base: base(MsgType::CreateDatabase, 5),
                    db_name: "ops".into(),
                    ..Default::default()
                }
                .encode_to_vec(),
                ReplicatedKind::CreateDatabase,
                vec![],
            ),
            (
                rpc::DropDatabaseRequest {
                    base: base(MsgType::DropDatabase, 6),
                    db_name: "ops".into(),
                }
                .encode_to_vec(),
                ReplicatedKind::DropDatabase,
                vec![],
            ),
        ];
        for (i, (bytes, kind, collections)) in cases.into_iter().enumerate() {
            let decoded = replicated_from(bytes.clone());
            assert_eq!(decoded.kind(), kind);
            assert_eq!(decoded.collection_names(), collections);
            assert_eq!(decoded.encode(), bytes, "{kind:?} re-encodes as read");
            assert_eq!(timestamp(&SourceMessage::Replicated(decoded)), i as u64 + 1);
        }
    }

    #[test]
    fn a_flush_of_several_collections_splits_per_collection() {
        let flush = ReplicatedRequest::Flush(rpc::FlushRequest {
            base: base(MsgType::Flush, 4),
            db_name: "default".into(),
            collection_names: vec!["a".into(), "b".into()],
        });
        assert_eq!(flush.addressed_to("b").collection_names(), ["b"]);
        assert_eq!(flush.addressed_to("b").db_name(), "default");
    }

    #[test]
    fn a_request_through_an_alias_is_readdressed_to_the_collection() {
        let load = ReplicatedRequest::Load(rpc::LoadCollectionRequest {
            base: base(MsgType::LoadCollection, 4),
            db_name: "default".into(),
            collection_name: "alias".into(),
            replica_number: 1,
            ..Default::default()
        });
        let ReplicatedRequest::Load(readdressed) = load.addressed_to("real") else {
            panic!("still a load")
        };
        assert_eq!(readdressed.collection_name, "real");
        assert_eq!(readdressed.replica_number, 1);
    }

    #[test]
    fn a_truncated_replicate_msg_is_an_error() {
        let bytes = rpc::CreateIndexRequest {
            base: base(MsgType::CreateIndex, 900),
            collection_name: "c".into(),
            index_name: "idx".into(),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
