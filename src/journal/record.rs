//! What one journal row holds: a change decoded from the source, ready to apply to the target.
//!
//! Rows are bincode-encoded behind a version tag ([`StoredRecord`]). Adding a variant to
//! [`Change`] is compatible (bincode tags variants by index: append only, never reorder);
//! changing a variant's fields needs a new `StoredRecord` version that decodes the old one.
//! `schema/README.md` states the same rules.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A source collection as the target sees it: the id selects (names are reused after a drop),
/// the database and name address the target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CollectionRef {
    pub id: i64,
    pub db_name: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PrimaryKeys {
    Int64(Vec<i64>),
    VarChar(Vec<String>),
}

impl PrimaryKeys {
    pub fn len(&self) -> usize {
        match self {
            PrimaryKeys::Int64(keys) => keys.len(),
            PrimaryKeys::VarChar(keys) => keys.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys' size: 8 bytes per integer, the UTF-8 length of a string.
    pub fn bytes(&self) -> u64 {
        match self {
            PrimaryKeys::Int64(keys) => 8 * keys.len() as u64,
            PrimaryKeys::VarChar(keys) => keys.iter().map(|k| k.len() as u64).sum(),
        }
    }
}

/// Rows inserted by one source Insert message. The columns stay in Milvus's own encoding
/// (`schema.FieldData`, protobuf) so they pass to the target's Insert without conversion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InsertBatch {
    pub collection: CollectionRef,
    pub partition: String,
    pub num_rows: u64,
    pub fields_data: Vec<EncodedColumn>,
}

/// One column of an insert: a `schema.FieldData`, protobuf-encoded as the source wrote it.
/// Stored as one byte string (bincode: length, then the bytes), not as a sequence of numbers.
/// Cloning it shares the bytes: the target calls made of a row refer to them, not copy them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedColumn(pub Bytes);

impl From<Vec<u8>> for EncodedColumn {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }
}

pub fn columns_bytes(columns: &[EncodedColumn]) -> u64 {
    columns.iter().map(|c| c.0.len() as u64).sum()
}

/// What a change does to the target, as metrics and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Insert,
    Delete,
    CreateCollection,
    DropCollection,
    CreatePartition,
    DropPartition,
    CreateIndex,
    DropIndex,
    Load,
    Release,
    Flush,
    CreateDatabase,
    DropDatabase,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Delete => "delete",
            Operation::CreateCollection => "create_collection",
            Operation::DropCollection => "drop_collection",
            Operation::CreatePartition => "create_partition",
            Operation::DropPartition => "drop_partition",
            Operation::CreateIndex => "create_index",
            Operation::DropIndex => "drop_index",
            Operation::Load => "load",
            Operation::Release => "release",
            Operation::Flush => "flush",
            Operation::CreateDatabase => "create_database",
            Operation::DropDatabase => "drop_database",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteBatch {
    pub collection: CollectionRef,
    /// Empty: every partition.
    pub partition: String,
    pub keys: PrimaryKeys,
}

/// A DDL event is staged on every vchannel of its collection that the reader sees it on; the
/// applier applies it once, when every vchannel in `barrier` has reached it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ddl {
    pub collection: CollectionRef,
    pub barrier: Vec<String>,
    pub event: DdlEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DdlEvent {
    CreateCollection {
        /// `schema.CollectionSchema`, protobuf, user fields only.
        schema: Vec<u8>,
        shards_num: i32,
        consistency_level: i32,
    },
    DropCollection,
    CreatePartition {
        partition: String,
    },
    DropPartition {
        partition: String,
    },
    /// An operation the source writes to its `{prefix}-replicate-msg` topic. It is staged on
    /// that topic's own lane (`Ddl.barrier` is the lane alone) and applied once every vchannel
    /// of `waits_for` has been applied through its timestamp.
    Replicated {
        kind: ReplicatedKind,
        /// The public `milvus.*Request` protobuf of `kind`, as the source wrote it.
        #[serde(with = "serde_bytes")]
        request: Vec<u8>,
        /// The collection's vchannels on the source; empty for database events.
        waits_for: Vec<String>,
    },
}

/// Which public request a [`DdlEvent::Replicated`] carries. Stored by index: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReplicatedKind {
    CreateIndex,
    DropIndex,
    Load,
    Release,
    Flush,
    CreateDatabase,
    DropDatabase,
}

impl ReplicatedKind {
    pub fn operation(self) -> Operation {
        match self {
            ReplicatedKind::CreateIndex => Operation::CreateIndex,
            ReplicatedKind::DropIndex => Operation::DropIndex,
            ReplicatedKind::Load => Operation::Load,
            ReplicatedKind::Release => Operation::Release,
            ReplicatedKind::Flush => Operation::Flush,
            ReplicatedKind::CreateDatabase => Operation::CreateDatabase,
            ReplicatedKind::DropDatabase => Operation::DropDatabase,
        }
    }

    /// True for events on a database rather than on one collection.
    pub fn is_database(self) -> bool {
        matches!(
            self,
            ReplicatedKind::CreateDatabase | ReplicatedKind::DropDatabase
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    Insert(InsertBatch),
    Delete(DeleteBatch),
    Ddl(Ddl),
}

impl Change {
    pub fn collection(&self) -> &CollectionRef {
        match self {
            Change::Insert(b) => &b.collection,
            Change::Delete(b) => &b.collection,
            Change::Ddl(d) => &d.collection,
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Change::Insert(_) => Operation::Insert,
            Change::Delete(_) => Operation::Delete,
            Change::Ddl(ddl) => match ddl.event {
                DdlEvent::CreateCollection { .. } => Operation::CreateCollection,
                DdlEvent::DropCollection => Operation::DropCollection,
                DdlEvent::CreatePartition { .. } => Operation::CreatePartition,
                DdlEvent::DropPartition { .. } => Operation::DropPartition,
                DdlEvent::Replicated { kind, .. } => kind.operation(),
            },
        }
    }

    /// Rows inserted or deleted; none for DDL.
    pub fn rows(&self) -> u64 {
        match self {
            Change::Insert(b) => b.num_rows,
            Change::Delete(b) => b.keys.len() as u64,
            Change::Ddl(_) => 0,
        }
    }

    /// Bytes of row data: encoded columns, or primary keys; none for DDL.
    pub fn bytes(&self) -> u64 {
        match self {
            Change::Insert(b) => columns_bytes(&b.fields_data),
            Change::Delete(b) => b.keys.bytes(),
            Change::Ddl(_) => 0,
        }
    }

    /// Order among changes of equal timestamp on one vchannel. An upsert reaches the MQ as an
    /// Insert and a Delete of the same keys with the same timestamp, Insert first; the Delete
    /// must be applied first or the new rows would be deleted.
    pub fn rank_within_timestamp(&self) -> u8 {
        match self {
            Change::Ddl(_) => 0,
            Change::Delete(_) => 1,
            Change::Insert(_) => 2,
        }
    }
}

/// The versioned envelope actually stored.
#[derive(Debug, Serialize, Deserialize)]
enum StoredRecord {
    V1(Change),
}

#[derive(Debug, thiserror::Error)]
#[error("journal record does not decode: {0}")]
pub struct RecordError(String);

pub fn encode(change: &Change) -> Result<Vec<u8>, RecordError> {
    bincode::serde::encode_to_vec(StoredRecordRef::V1(change), bincode::config::standard())
        .map_err(|e| RecordError(e.to_string()))
}

/// No real record comes near this; a corrupt length prefix claiming more is an error instead of
/// an allocation that aborts the process (found by the `journal_record` fuzz target).
const DECODE_LIMIT: usize = 1 << 30;

pub fn decode(bytes: &[u8]) -> Result<Change, RecordError> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    let (record, used): (StoredRecord, usize) =
        bincode::serde::decode_from_slice(bytes, config).map_err(|e| RecordError(e.to_string()))?;
    if used != bytes.len() {
        return Err(RecordError(format!(
            "{} trailing bytes",
            bytes.len() - used
        )));
    }
    match record {
        StoredRecord::V1(change) => Ok(change),
    }
}

/// Borrowing twin of [`StoredRecord`] so encoding needs no clone; same variant order.
#[derive(Serialize)]
enum StoredRecordRef<'a> {
    V1(&'a Change),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coll() -> CollectionRef {
        CollectionRef {
            id: 7,
            db_name: "default".into(),
            name: "c".into(),
        }
    }

    #[test]
    fn every_change_round_trips() {
        let changes = [
            Change::Insert(InsertBatch {
                collection: coll(),
                partition: "_default".into(),
                num_rows: 2,
                fields_data: vec![vec![1, 2, 3].into(), vec![].into()],
            }),
            Change::Delete(DeleteBatch {
                collection: coll(),
                partition: String::new(),
                keys: PrimaryKeys::VarChar(vec!["a".into(), "b".into()]),
            }),
            Change::Ddl(Ddl {
                collection: coll(),
                barrier: vec!["v0".into(), "v1".into()],
                event: DdlEvent::CreateCollection {
                    schema: vec![9],
                    shards_num: 2,
                    consistency_level: 1,
                },
            }),
            Change::Ddl(Ddl {
                collection: coll(),
                barrier: vec!["by-dev-replicate-msg".into()],
                event: DdlEvent::Replicated {
                    kind: ReplicatedKind::CreateIndex,
                    request: vec![1, 2, 3],
                    waits_for: vec!["v0".into(), "v1".into()],
                },
            }),
        ];
        for change in changes {
            assert_eq!(decode(&encode(&change).unwrap()).unwrap(), change);
        }
    }

    #[test]
    fn older_variants_keep_their_tags() {
        // Appending `Replicated` must not move the variants journals already hold: a
        // DropCollection row written before it still decodes as one.
        let drop = Change::Ddl(Ddl {
            collection: coll(),
            barrier: vec![],
            event: DdlEvent::DropCollection,
        });
        let bytes = encode(&drop).unwrap();
        // V1 tag 0, Change::Ddl tag 2, id 7 zigzag 14, "default", "c", no barrier, DropCollection 1.
        let mut expected = vec![0u8, 2, 14, 7];
        expected.extend(b"default");
        expected.extend([1, b'c', 0, 1]);
        assert_eq!(bytes, expected);
        let replicated = Change::Ddl(Ddl {
            collection: coll(),
            barrier: vec![],
            event: DdlEvent::Replicated {
                kind: ReplicatedKind::DropDatabase,
                request: vec![],
                waits_for: vec![],
            },
        });
        let bytes = encode(&replicated).unwrap();
        // DdlEvent tag 4, then ReplicatedKind tag 6.
        assert_eq!(&bytes[expected.len() - 1..expected.len() + 1], [4, 6]);
    }

    #[test]
    fn a_column_is_stored_as_its_length_then_its_bytes() {
        // The same bytes as a plain Vec<u8> would give: journals from before the newtype decode.
        let column = EncodedColumn::from(vec![7, 8, 9]);
        let plain = vec![7u8, 8, 9];
        let config = bincode::config::standard();
        let stored = bincode::serde::encode_to_vec(&column, config).unwrap();
        assert_eq!(stored, [3, 7, 8, 9]);
        assert_eq!(
            stored,
            bincode::serde::encode_to_vec(&plain, config).unwrap()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[0xff; 3]).is_err());
        assert!(decode(&[]).is_err());
        let mut bytes = encode(&Change::Ddl(Ddl {
            collection: coll(),
            barrier: vec![],
            event: DdlEvent::DropCollection,
        }))
        .unwrap();
        bytes.push(0);
        assert!(decode(&bytes).unwrap_err().to_string().contains("trailing"));
    }

    #[test]
    fn a_huge_claimed_length_is_an_error_not_an_allocation() {
        // Found by the journal_record fuzz target: a length prefix claiming ~4e16 bytes; without
        // the decode limit this aborts the process.
        let input = include_bytes!("../../fuzz/regressions/journal_record-huge-length");
        assert!(decode(input).is_err());
    }

    #[test]
    fn a_delete_sorts_before_an_insert_of_the_same_timestamp() {
        let insert = Change::Insert(InsertBatch {
            collection: coll(),
            partition: String::new(),
            num_rows: 0,
            fields_data: vec![],
        });
        let delete = Change::Delete(DeleteBatch {
            collection: coll(),
            partition: String::new(),
            keys: PrimaryKeys::Int64(vec![]),
        });
        assert!(delete.rank_within_timestamp() < insert.rank_within_timestamp());
    }
}
