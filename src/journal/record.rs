//! How one journal row stores its change (`model::Change`).
//!
//! Rows are bincode-encoded behind a version tag ([`StoredRecord`]). Adding a variant to
//! [`Change`] is compatible (bincode tags variants by index: append only, never reorder);
//! changing a variant's fields needs a new `StoredRecord` version that decodes the old one.
//! `schema/README.md` states the same rules.

use serde::{Deserialize, Serialize};

use crate::model::Change;

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
    use crate::model::*;

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
