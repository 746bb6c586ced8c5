//! `column_merge`: the applier's merge of consecutive inserts' columns (`apply::columns`).

use milvus::proto::schema::{
    ArrayArray, BoolArray, DataType, DoubleArray, FieldData, FloatArray, IntArray, JsonArray,
    LongArray, ScalarField, StringArray, VectorField, field_data::Field, scalar_field,
    vector_field,
};
use milvus_cdc::apply::columns::{MergedColumn, append_columns};
use milvus_cdc::model::EncodedColumn;
use prost::Message;

/// The types the generator writes, each with its values' shape.
const TYPES: [DataType; 12] = [
    DataType::Bool,
    DataType::Int32,
    DataType::Int64,
    DataType::Float,
    DataType::Double,
    DataType::VarChar,
    DataType::Json,
    DataType::Array,
    DataType::FloatVector,
    DataType::BinaryVector,
    DataType::Float16Vector,
    DataType::BFloat16Vector,
];

/// One encoded column from the front of `data`: `[mode, type, field, rows, seed]`. Mode bit 0:
/// the next byte is a length and that many bytes are the column as they are; otherwise a
/// `FieldData` of `rows % 4` values made from `seed`, of type `TYPES[type]` (bit 1: with the
/// values of the next type, a column that lies about its type; bit 2: with `valid_data`; bit 3:
/// vectors of dim 16 instead of 8), named by `field` (two fields).
fn column(data: &mut &[u8]) -> Option<Vec<u8>> {
    let (&[mode, ty, field, rows, seed], rest) = data.split_first_chunk::<5>()?;
    *data = rest;
    if mode & 1 != 0 {
        let len = usize::from(ty).min(data.len());
        let (raw, rest) = data.split_at(len);
        *data = rest;
        return Some(raw.to_vec());
    }
    let ty = usize::from(ty) % TYPES.len();
    let values_of = if mode & 2 != 0 {
        (ty + 1) % TYPES.len()
    } else {
        ty
    };
    let rows = usize::from(rows % 4);
    let dim = if mode & 8 != 0 { 16 } else { 8 };
    let valid = if mode & 4 != 0 {
        vec![true; rows]
    } else {
        Vec::new()
    };
    let column = FieldData {
        r#type: TYPES[ty] as i32,
        field_name: format!("f{}", field & 1),
        field_id: 100 + i64::from(field & 1),
        valid_data: valid,
        field: Some(values(TYPES[values_of], rows, dim, seed)),
        ..Default::default()
    };
    Some(column.encode_to_vec())
}

fn values(ty: DataType, rows: usize, dim: usize, seed: u8) -> Field {
    use scalar_field::Data as S;
    use vector_field::Data as V;
    let n = |i: usize| i64::from(seed) + i as i64;
    let scalar = |data| {
        Field::Scalars(ScalarField {
            data: Some(data),
            ..Default::default()
        })
    };
    let vector = |data| {
        Field::Vectors(VectorField {
            dim: dim as i64,
            data: Some(data),
            ..Default::default()
        })
    };
    let bytes = |per_row: usize| (0..rows * per_row).map(|i| n(i) as u8).collect::<Vec<u8>>();
    match ty {
        DataType::Bool => scalar(S::BoolData(BoolArray {
            data: (0..rows).map(|i| n(i) % 2 == 0).collect(),
        })),
        DataType::Int32 => scalar(S::IntData(IntArray {
            data: (0..rows).map(|i| n(i) as i32).collect(),
        })),
        DataType::Int64 => scalar(S::LongData(LongArray {
            data: (0..rows).map(n).collect(),
        })),
        DataType::Float => scalar(S::FloatData(FloatArray {
            data: (0..rows).map(|i| n(i) as f32).collect(),
        })),
        DataType::Double => scalar(S::DoubleData(DoubleArray {
            data: (0..rows).map(|i| n(i) as f64).collect(),
        })),
        DataType::VarChar => scalar(S::StringData(StringArray {
            data: (0..rows).map(|i| format!("s{}", n(i))).collect(),
        })),
        DataType::Json => scalar(S::JsonData(JsonArray {
            data: (0..rows)
                .map(|i| format!("{{\"k\":{}}}", n(i)).into())
                .collect(),
        })),
        DataType::Array => scalar(S::ArrayData(ArrayArray {
            data: (0..rows)
                .map(|i| ScalarField {
                    data: Some(S::LongData(LongArray {
                        data: vec![n(i); i],
                    })),
                    ..Default::default()
                })
                .collect(),
            element_type: DataType::Int64 as i32,
        })),
        DataType::FloatVector => vector(V::FloatVector(FloatArray {
            data: (0..rows * dim).map(|i| n(i) as f32).collect(),
        })),
        DataType::BinaryVector => vector(V::BinaryVector(bytes(dim / 8))),
        DataType::Float16Vector => vector(V::Float16Vector(bytes(dim * 2))),
        _ => vector(V::Bfloat16Vector(bytes(dim * 2))),
    }
}

/// A column's rows, each as text, and its validity flags; None when the rows cannot be told
/// (values of a kind the generator does not write, vectors whose length is not rows of `dim`).
fn rows(column: &FieldData) -> Option<(Vec<String>, Vec<bool>)> {
    use scalar_field::Data as S;
    use vector_field::Data as V;
    fn each<T: std::fmt::Debug>(kind: &str, values: &[T]) -> Vec<String> {
        values.iter().map(|v| format!("{kind} {v:?}")).collect()
    }
    let (rows, inner_valid) = match column.field.as_ref()? {
        Field::Scalars(s) => (
            match s.data.as_ref()? {
                S::BoolData(a) => each("bool", &a.data),
                S::IntData(a) => each("int", &a.data),
                S::LongData(a) => each("long", &a.data),
                S::FloatData(a) => each("float", &a.data),
                S::DoubleData(a) => each("double", &a.data),
                S::StringData(a) => each("string", &a.data),
                S::JsonData(a) => each("json", &a.data),
                S::ArrayData(a) => each(&format!("array of {}", a.element_type), &a.data),
                _ => return None,
            },
            &s.valid_data,
        ),
        Field::Vectors(v) => {
            let dim = usize::try_from(v.dim).ok().filter(|d| *d > 0)?;
            // Each row's values, when the values are whole rows of `dim`.
            fn chunks<T: std::fmt::Debug>(
                kind: &str,
                per_row: usize,
                v: &[T],
            ) -> Option<Vec<String>> {
                (per_row > 0 && v.len().is_multiple_of(per_row)).then(|| {
                    v.chunks(per_row)
                        .map(|row| format!("{kind} {row:?}"))
                        .collect()
                })
            }
            let rows = match v.data.as_ref()? {
                V::FloatVector(a) => chunks(&format!("float {dim}"), dim, &a.data)?,
                V::BinaryVector(b) => chunks(&format!("binary {dim}"), dim / 8, b)?,
                V::Float16Vector(b) => chunks(&format!("f16 {dim}"), dim * 2, b)?,
                V::Bfloat16Vector(b) => chunks(&format!("bf16 {dim}"), dim * 2, b)?,
                _ => return None,
            };
            (rows, &v.valid_data)
        }
        _ => return None,
    };
    let valid = column
        .valid_data
        .iter()
        .chain(inner_valid)
        .copied()
        .collect();
    Some((rows, valid))
}

/// The input is a column count (1 to 3) and then inserts of that many columns each. The
/// inserts are merged into the first one by one, as the applier batches them. Never a panic;
/// a merge refused or failed leaves the batch as it was; a merge made holds, per column, the
/// rows of the batch and then those of the insert, of the same field, none lost or doubled.
pub fn column_merge(data: &[u8]) {
    let Some((count, mut data)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 3) + 1;
    let mut insert = || -> Option<Vec<MergedColumn>> {
        (0..count)
            .map(|_| column(&mut data).map(|c| MergedColumn::from(&EncodedColumn(c.into()))))
            .collect()
    };
    let Some(mut batch) = insert() else {
        return;
    };
    while let Some(next) = insert() {
        let before = batch.clone();
        if append_columns(&mut batch, &next) != Ok(true) {
            assert_eq!(batch, before, "a refused merge changed the batch");
            continue;
        }
        for ((merged, d), s) in batch.iter().zip(&before).zip(&next) {
            check_merge(merged, d, s);
        }
    }
}

fn check_merge(merged: &MergedColumn, d: &MergedColumn, s: &MergedColumn) {
    let decode = |c: &MergedColumn| FieldData::decode(c.to_vec().as_slice());
    let (Ok(m), Ok(d), Ok(s)) = (decode(merged), decode(d), decode(s)) else {
        // The merge reads only the head of columns it concatenates; one whose values do not
        // decode fails in the call, alone or merged.
        return;
    };
    assert_eq!(
        (&m.field_name, m.field_id, m.r#type),
        (&d.field_name, d.field_id, d.r#type),
        "the merged column is the batch's field"
    );
    assert_eq!(
        (&s.field_name, s.field_id, s.r#type),
        (&d.field_name, d.field_id, d.r#type),
        "only columns of one field merge"
    );
    let (Some(dr), Some(sr)) = (rows(&d), rows(&s)) else {
        return;
    };
    let expected = ([dr.0, sr.0].concat(), [dr.1, sr.1].concat());
    assert_eq!(
        rows(&m),
        Some(expected),
        "the merged column holds the batch's rows and then the insert's: {d:?} + {s:?} = {m:?}"
    );
}
