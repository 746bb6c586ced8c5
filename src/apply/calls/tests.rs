use milvus::proto::schema::{
    FieldData, LongArray, ScalarField, field_data::Field, scalar_field::Data,
};

use prost::Message;

use super::*;
use crate::model::{Ddl, DdlEvent, DeleteBatch, EncodedColumn, InsertBatch, RowPosition};

fn coll() -> CollectionRef {
    CollectionRef {
        id: 1,
        db_name: "default".into(),
        name: "c".into(),
    }
}

fn ids(values: &[i64]) -> Vec<EncodedColumn> {
    let field = FieldData {
        field_name: "id".into(),
        r#type: 5,
        field: Some(Field::Scalars(ScalarField {
            data: Some(Data::LongData(LongArray {
                data: values.to_vec(),
            })),
            ..Default::default()
        })),
        ..Default::default()
    };
    vec![EncodedColumn::from(field.encode_to_vec())]
}

fn row(ts: u64, seq: u64, change: Change) -> JournalRow {
    JournalRow {
        vchannel: "v".into(),
        position: RowPosition { ts, seq },
        change,
        encoded_len: 1,
    }
}

fn insert(ts: u64, seq: u64, keys: &[i64]) -> JournalRow {
    let change = Change::Insert(InsertBatch {
        collection: coll(),
        partition: "_default".into(),
        num_rows: keys.len() as u64,
        fields_data: ids(keys),
    });
    row(ts, seq, change)
}

fn delete(ts: u64, seq: u64, keys: &[i64]) -> JournalRow {
    row(
        ts,
        seq,
        Change::Delete(DeleteBatch {
            collection: coll(),
            partition: "_default".into(),
            keys: PrimaryKeys::Int64(keys.to_vec()),
        }),
    )
}

fn ddl(ts: u64, seq: u64) -> JournalRow {
    row(
        ts,
        seq,
        Change::Ddl(Ddl {
            collection: coll(),
            barrier: vec!["v".into()],
            event: DdlEvent::DropCollection,
        }),
    )
}

fn inserted_keys(call: &Call) -> Vec<i64> {
    let Call::Insert { fields_data, .. } = call else {
        panic!("not an insert: {call:?}")
    };
    let Some(Field::Scalars(ScalarField {
        data: Some(Data::LongData(keys)),
        ..
    })) = FieldData::decode(fields_data[0].to_vec().as_slice())
        .unwrap()
        .field
    else {
        panic!()
    };
    keys.data.clone()
}

#[test]
fn consecutive_inserts_become_one_call() {
    let rows = [insert(1, 0, &[1, 2]), insert(2, 1, &[3])];
    let Step::Data {
        rows: prefix,
        calls,
    } = next_step(&rows, true, 0, usize::MAX).unwrap()
    else {
        panic!()
    };
    assert_eq!(prefix.len(), 2);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].rows(), 3);
    assert_eq!(inserted_keys(&calls[0]), [1, 2, 3]);
}

#[test]
fn an_upserts_delete_is_applied_before_its_insert() {
    // The source writes an upsert as Insert then Delete with one timestamp.
    let rows = [insert(5, 0, &[7]), delete(5, 1, &[7])];
    let Step::Data {
        rows: prefix,
        calls,
    } = next_step(&rows, true, 0, usize::MAX).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        prefix.len(),
        2,
        "the batch still covers both rows in journal order"
    );
    assert!(matches!(calls[0], Call::Delete { .. }));
    assert_eq!(inserted_keys(&calls[1]), [7]);
}

#[test]
fn a_fetch_cut_never_splits_a_timestamp() {
    let rows = [insert(1, 0, &[1]), insert(5, 1, &[7])];
    let Step::Data { rows: prefix, .. } = next_step(&rows, false, 0, usize::MAX).unwrap() else {
        panic!()
    };
    assert_eq!(prefix.len(), 1, "ts 5 may have more rows beyond the limit");
}

#[test]
fn data_stops_before_a_ddl_and_a_ddl_comes_alone() {
    let rows = [insert(1, 0, &[1]), ddl(2, 1), insert(3, 2, &[2])];
    let Step::Data { rows: prefix, .. } = next_step(&rows, true, 0, usize::MAX).unwrap() else {
        panic!()
    };
    assert_eq!(prefix.len(), 1);
    assert!(
        matches!(next_step(&rows[1..], true, 0, usize::MAX).unwrap(), Step::Ddl(r) if r.position.ts == 2)
    );
}

#[test]
fn inserts_and_deletes_interleaved_keep_their_order() {
    let rows = [insert(1, 0, &[1]), delete(2, 1, &[1]), insert(3, 2, &[1])];
    let Step::Data { calls, .. } = next_step(&rows, true, 0, usize::MAX).unwrap() else {
        panic!()
    };
    assert_eq!(calls.len(), 3);
    assert!(matches!(calls[1], Call::Delete { .. }));
}

#[test]
fn the_rest_of_a_write_a_snapshot_copy_carries_is_covered_by_the_batch_and_not_sent() {
    // The task started between an upsert's Insert and its Delete (ts 5): the copy has the
    // row as the upsert left it, and the Delete alone would remove it.
    let rows = [delete(5, 1, &[7]), delete(9, 2, &[8]), insert(9, 3, &[8])];
    let Step::Data {
        rows: prefix,
        calls,
    } = next_step(&rows, true, 5, usize::MAX).unwrap()
    else {
        panic!()
    };
    assert_eq!(prefix.len(), 3, "the applied position moves past all three");
    assert_eq!(calls.len(), 2);
    assert!(matches!(&calls[0], Call::Delete { keys: PrimaryKeys::Int64(k), .. } if k == &[8]));
    assert_eq!(inserted_keys(&calls[1]), [8]);
}

#[test]
fn nothing_pending_is_idle() {
    assert_eq!(next_step(&[], true, 0, usize::MAX).unwrap(), Step::Idle);
}

#[test]
fn merged_calls_stay_under_the_call_size() {
    let rows = [
        insert(1, 0, &[1, 2]),
        insert(2, 1, &[3]),
        insert(3, 2, &[4]),
    ];
    let calls = |rows: &[JournalRow], max_call_bytes| {
        let Step::Data { calls, .. } = next_step(rows, true, 0, max_call_bytes).unwrap() else {
            panic!()
        };
        calls
    };
    let first_two = calls(&rows[..2], usize::MAX)[0].bytes() as usize;
    let capped = calls(&rows, first_two);
    assert_eq!(capped.len(), 2, "the first two fit, the third does not");
    assert_eq!(inserted_keys(&capped[0]), [1, 2, 3]);
    assert_eq!(inserted_keys(&capped[1]), [4]);
    let alone = calls(&rows, 1);
    assert_eq!(alone.len(), 3, "a row larger than the cap goes alone");
    let keys: Vec<i64> = alone.iter().flat_map(inserted_keys).collect();
    assert_eq!(keys, [1, 2, 3, 4], "in order, none left out");
}

fn call(row: &JournalRow) -> Call {
    let Step::Data { mut calls, .. } =
        next_step(std::slice::from_ref(row), true, 0, usize::MAX).unwrap()
    else {
        panic!()
    };
    calls.remove(0)
}

fn deleted_keys(call: &Call) -> Vec<i64> {
    match call {
        Call::Delete {
            keys: PrimaryKeys::Int64(keys),
            ..
        } => keys.clone(),
        other => panic!("not a delete: {other:?}"),
    }
}

#[test]
fn the_calls_at_one_place_of_each_vchannel_go_as_one_call_each_vchannel_in_its_order() {
    let lanes = vec![
        vec![call(&insert(1, 0, &[1, 2])), call(&delete(2, 1, &[1]))],
        vec![call(&insert(1, 0, &[10])), call(&delete(3, 1, &[10]))],
        vec![call(&insert(4, 0, &[20]))],
    ];
    let merged = merged_across_vchannels(lanes, usize::MAX);
    assert_eq!(merged.len(), 1, "one lane");
    assert_eq!(inserted_keys(&merged[0][0]), [1, 2, 10, 20]);
    assert_eq!(
        deleted_keys(&merged[0][1]),
        [1, 10],
        "each vchannel's delete after its insert"
    );
    assert_eq!(
        merged[0].len(),
        2,
        "no more calls one after the other than the longest lane"
    );
}

#[test]
fn lanes_stay_side_by_side_when_a_place_cannot_be_one_call() {
    let different_kinds = vec![
        vec![call(&insert(1, 0, &[1]))],
        vec![call(&delete(1, 0, &[10]))],
    ];
    assert_eq!(
        merged_across_vchannels(different_kinds.clone(), usize::MAX),
        different_kinds
    );
    let (a, b) = (call(&insert(1, 0, &[1, 2])), call(&insert(1, 0, &[3])));
    let too_large = vec![vec![a.clone()], vec![b.clone()]];
    let max = (a.bytes() + b.bytes() - 1) as usize;
    assert_eq!(merged_across_vchannels(too_large.clone(), max), too_large);
    let one = vec![vec![a.clone(), b.clone()]];
    assert_eq!(
        merged_across_vchannels(one.clone(), usize::MAX),
        one,
        "one lane is left alone"
    );
}
