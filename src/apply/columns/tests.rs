use milvus::proto::schema::{
    BoolArray, DataType, FieldData, FloatArray, JsonArray, LongArray, ScalarField, StringArray,
    VectorField, field_data::Field, scalar_field, vector_field,
};
use proptest::prelude::*;

use super::*;

fn scalar(name: &str, data_type: DataType, data: scalar_field::Data) -> FieldData {
    FieldData {
        r#type: data_type as i32,
        field_name: name.into(),
        field: Some(Field::Scalars(ScalarField {
            data: Some(data),
            ..Default::default()
        })),
        field_id: 100,
        ..Default::default()
    }
}

fn vector(name: &str, data_type: DataType, dim: i64, data: vector_field::Data) -> FieldData {
    FieldData {
        r#type: data_type as i32,
        field_name: name.into(),
        field: Some(Field::Vectors(VectorField {
            dim,
            data: Some(data),
            ..Default::default()
        })),
        field_id: 101,
        ..Default::default()
    }
}

fn encoded(fields: &[FieldData]) -> Vec<MergedColumn> {
    fields
        .iter()
        .map(|f| MergedColumn::from(&EncodedColumn::from(f.encode_to_vec())))
        .collect()
}

/// The columns of one insert of `rows` rows with an int64 key, a varchar, a bool, a JSON and a
/// float vector of dimension 2.
fn insert(keys: &[i64], titles: &[String], vectors: &[f32]) -> Vec<FieldData> {
    use scalar_field::Data::*;
    vec![
        scalar(
            "id",
            DataType::Int64,
            LongData(LongArray {
                data: keys.to_vec(),
            }),
        ),
        scalar(
            "title",
            DataType::VarChar,
            StringData(StringArray {
                data: titles.to_vec(),
            }),
        ),
        scalar(
            "flag",
            DataType::Bool,
            BoolData(BoolArray {
                data: keys.iter().map(|k| k % 2 == 0).collect(),
            }),
        ),
        scalar(
            "doc",
            DataType::Json,
            JsonData(JsonArray {
                data: keys
                    .iter()
                    .map(|k| format!("{{\"k\":{k}}}").into_bytes())
                    .collect(),
            }),
        ),
        vector(
            "vec",
            DataType::FloatVector,
            2,
            vector_field::Data::FloatVector(FloatArray {
                data: vectors.to_vec(),
            }),
        ),
    ]
}

fn decoded(columns: &[MergedColumn]) -> Vec<FieldData> {
    columns
        .iter()
        .map(|c| FieldData::decode(c.to_vec().as_slice()).unwrap())
        .collect()
}

proptest! {
    /// Merged without decoding, the columns read back exactly as the rows of both inserts.
    #[test]
    fn concatenated_columns_hold_the_rows_of_both_inserts(
        a in prop::collection::vec((any::<i64>(), "[a-z]{0,8}", any::<f32>(), any::<f32>()), 0..20),
        b in prop::collection::vec((any::<i64>(), "[a-z]{0,8}", any::<f32>(), any::<f32>()), 0..20),
    ) {
        let columns = |rows: &[(i64, String, f32, f32)]| {
            let keys: Vec<i64> = rows.iter().map(|r| r.0).collect();
            let titles: Vec<String> = rows.iter().map(|r| r.1.clone()).collect();
            let vectors: Vec<f32> = rows.iter().flat_map(|r| [r.2, r.3]).collect();
            insert(&keys, &titles, &vectors)
        };
        let mut merged = encoded(&columns(&a));
        prop_assert!(append_columns(&mut merged, &encoded(&columns(&b))).unwrap());
        let both: Vec<_> = a.iter().chain(&b).cloned().collect();
        // Compared through the encoding: NaN floats are equal bit for bit, not by `==`.
        let expected: Vec<Vec<u8>> = columns(&both).iter().map(Message::encode_to_vec).collect();
        let actual: Vec<Vec<u8>> = decoded(&merged).iter().map(Message::encode_to_vec).collect();
        prop_assert_eq!(actual, expected);
    }
}

#[test]
fn binary_vectors_are_decoded_and_appended_not_overwritten() {
    let column = |bytes: &[u8]| {
        encoded(&[vector(
            "bits",
            DataType::BinaryVector,
            16,
            vector_field::Data::BinaryVector(bytes.to_vec()),
        )])
    };
    let mut merged = column(&[1, 2]);
    assert!(append_columns(&mut merged, &column(&[3, 4, 5, 6])).unwrap());
    let Some(Field::Vectors(v)) = &decoded(&merged)[0].field else {
        panic!("not a vector column")
    };
    assert_eq!(
        v.data,
        Some(vector_field::Data::BinaryVector(vec![1, 2, 3, 4, 5, 6]))
    );
}

#[test]
fn different_fields_are_not_merged_and_left_untouched() {
    use scalar_field::Data::LongData;
    let a = encoded(&[scalar(
        "id",
        DataType::Int64,
        LongData(LongArray { data: vec![1] }),
    )]);
    let b = encoded(&[scalar(
        "key",
        DataType::Int64,
        LongData(LongArray { data: vec![2] }),
    )]);
    let mut merged = a.clone();
    assert!(!append_columns(&mut merged, &b).unwrap());
    assert_eq!(merged, a);
    assert!(!append_columns(&mut merged, &[]).unwrap());
}

#[test]
fn vectors_of_different_dimensions_are_not_merged() {
    let column = |dim: i64| {
        encoded(&[vector(
            "bits",
            DataType::BinaryVector,
            dim,
            vector_field::Data::BinaryVector(vec![0; 2]),
        )])
    };
    let mut merged = column(16);
    assert!(!append_columns(&mut merged, &column(8)).unwrap());
    assert_eq!(merged, column(16));
}

#[test]
fn a_column_that_does_not_decode_is_an_error() {
    let bad = || MergedColumn::from(&EncodedColumn::from(vec![0x0a, 0x10, 1]));
    assert!(append_columns(&mut [bad()], &[bad()]).is_err());
}

#[test]
fn float_vectors_of_different_dimensions_are_not_merged() {
    let column = |dim: i64| {
        encoded(&[vector(
            "v",
            DataType::FloatVector,
            dim,
            vector_field::Data::FloatVector(FloatArray { data: vec![1.0; 8] }),
        )])
    };
    let mut merged = column(4);
    assert!(!append_columns(&mut merged, &column(8)).unwrap());
    assert_eq!(merged, column(4));
}

#[test]
fn a_column_whose_values_are_not_of_its_type_keeps_the_rows_merged_before_it() {
    use scalar_field::Data::*;
    let longs = encoded(&[scalar(
        "id",
        DataType::Int64,
        LongData(LongArray { data: vec![1, 2] }),
    )]);
    // Protobuf keeps the second of two kinds of values: concatenated, rows 1 and 2 were lost.
    let lying = encoded(&[scalar(
        "id",
        DataType::Int64,
        FloatData(FloatArray { data: vec![3.0] }),
    )]);
    let mut merged = longs.clone();
    assert!(!append_columns(&mut merged, &lying).unwrap());
    assert_eq!(merged, longs);
    let mut merged = longs.clone();
    assert!(append_columns(&mut merged, &longs).unwrap());
    assert_eq!(
        decoded(&merged),
        [scalar(
            "id",
            DataType::Int64,
            LongData(LongArray {
                data: vec![1, 2, 1, 2]
            })
        )]
    );
}
