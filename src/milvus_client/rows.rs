//! Query results as rows: a primary key and the bytes of every other value, so two rows
//! compare bit for bit.

use std::cmp::Ordering;

use milvus::proto::schema::{FieldData, field_data, scalar_field, vector_field};
use prost::Message;

use crate::model::PrimaryKey;

/// One row: its key and, for every other field in name order, the field's name and value
/// bytes. Two rows are equal when every value is bit for bit the same (a float by its bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub key: PrimaryKey,
    pub values: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RowsError {
    #[error("the reply has no column {0}")]
    NoColumn(String),
    #[error("column {field} holds {found} values, not {rows}")]
    ShortColumn {
        field: String,
        rows: usize,
        found: usize,
    },
    #[error("column {field} is of a type verify does not compare ({kind})")]
    Unsupported { field: String, kind: String },
}

/// The rows of a query reply, sorted by key.
pub fn rows(columns: &[FieldData], primary_key: &str) -> Result<Vec<Row>, RowsError> {
    let pk = columns
        .iter()
        .find(|c| c.field_name == primary_key)
        .ok_or_else(|| RowsError::NoColumn(primary_key.to_owned()))?;
    let keys = keys(pk)?;
    let mut others: Vec<&FieldData> = columns
        .iter()
        .filter(|c| c.field_name != primary_key)
        .collect();
    others.sort_by(|a, b| a.field_name.cmp(&b.field_name));
    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|key| Row {
            key,
            values: Vec::new(),
        })
        .collect();
    for column in others {
        let values = values(column, rows.len())?;
        for (row, value) in rows.iter_mut().zip(values) {
            let name = column.field_name.as_bytes();
            row.values.extend((name.len() as u32).to_le_bytes());
            row.values.extend(name);
            row.values.extend((value.len() as u32).to_le_bytes());
            row.values.extend(value);
        }
    }
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(rows)
}

/// The keys of a primary-key column, in reply order.
pub fn keys(column: &FieldData) -> Result<Vec<PrimaryKey>, RowsError> {
    use scalar_field::Data;
    let data = match &column.field {
        Some(field_data::Field::Scalars(s)) => s.data.as_ref(),
        _ => None,
    };
    match data {
        Some(Data::LongData(a)) => Ok(a.data.iter().map(|&n| PrimaryKey::Int(n)).collect()),
        Some(Data::StringData(a)) => Ok(a.data.iter().cloned().map(PrimaryKey::Str).collect()),
        None => Ok(Vec::new()),
        Some(_) => Err(RowsError::Unsupported {
            field: column.field_name.clone(),
            kind: "primary key neither Int64 nor VarChar".into(),
        }),
    }
}

/// Each row's value of `column`, as bytes.
fn values(column: &FieldData, rows: usize) -> Result<Vec<Vec<u8>>, RowsError> {
    let field = column.field_name.clone();
    let short = |found: usize| RowsError::ShortColumn {
        field: field.clone(),
        rows,
        found,
    };
    let unsupported = |kind: &str| RowsError::Unsupported {
        field: field.clone(),
        kind: kind.to_owned(),
    };
    let values: Vec<Vec<u8>> = match &column.field {
        None => return Err(unsupported("empty")),
        Some(field_data::Field::Scalars(s)) => {
            use scalar_field::Data;
            match &s.data {
                None => Vec::new(),
                Some(Data::BoolData(a)) => a.data.iter().map(|&b| vec![b as u8]).collect(),
                Some(Data::IntData(a)) => a.data.iter().map(|n| n.to_le_bytes().into()).collect(),
                Some(Data::LongData(a)) => a.data.iter().map(|n| n.to_le_bytes().into()).collect(),
                Some(Data::FloatData(a)) => a
                    .data
                    .iter()
                    .map(|n| n.to_bits().to_le_bytes().into())
                    .collect(),
                Some(Data::DoubleData(a)) => a
                    .data
                    .iter()
                    .map(|n| n.to_bits().to_le_bytes().into())
                    .collect(),
                Some(Data::StringData(a)) => a.data.iter().map(|s| s.as_bytes().into()).collect(),
                Some(Data::BytesData(a)) => a.data.clone(),
                Some(Data::JsonData(a)) => a.data.clone(),
                // An array value is itself a message: its encoding is its value.
                Some(Data::ArrayData(a)) => a.data.iter().map(Message::encode_to_vec).collect(),
                Some(_) => return Err(unsupported("scalar")),
            }
        }
        Some(field_data::Field::Vectors(v)) => {
            use vector_field::Data;
            let dim = usize::try_from(v.dim).unwrap_or(0);
            let fixed = |bytes: &[u8], width: usize| -> Vec<Vec<u8>> {
                if width == 0 {
                    return Vec::new();
                }
                bytes.chunks(width).map(<[u8]>::to_vec).collect()
            };
            match &v.data {
                None => Vec::new(),
                Some(Data::FloatVector(a)) => {
                    let bytes: Vec<u8> = a
                        .data
                        .iter()
                        .flat_map(|f| f.to_bits().to_le_bytes())
                        .collect();
                    fixed(&bytes, dim * 4)
                }
                Some(Data::BinaryVector(b)) => fixed(b, dim.div_ceil(8)),
                Some(Data::Float16Vector(b) | Data::Bfloat16Vector(b)) => fixed(b, dim * 2),
                Some(Data::Int8Vector(b)) => fixed(b, dim),
                Some(Data::SparseFloatVector(a)) => a.contents.clone(),
                Some(_) => return Err(unsupported("vector")),
            }
        }
        Some(_) => return Err(unsupported("struct")),
    };
    if values.len() != rows {
        return Err(short(values.len()));
    }
    Ok(values)
}

/// What a comparison of the same key range on both sides found.
#[derive(Debug, Default, PartialEq)]
pub struct RangeDiff {
    /// On the source, not on the target.
    pub missing: Vec<PrimaryKey>,
    /// On the target, not on the source.
    pub extra: Vec<PrimaryKey>,
    /// On both, with a different value.
    pub different: Vec<PrimaryKey>,
}

impl RangeDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

/// Compares two key-sorted runs of rows covering the same key range: one pass, as a merge.
pub fn diff(source: &[Row], target: &[Row]) -> RangeDiff {
    let mut found = RangeDiff::default();
    // Equal ranges, the common case, are settled in one comparison.
    if source == target {
        return found;
    }
    let (mut s, mut t) = (source.iter().peekable(), target.iter().peekable());
    loop {
        match (s.peek(), t.peek()) {
            (None, None) => break,
            (Some(a), None) => {
                found.missing.push(a.key.clone());
                s.next();
            }
            (None, Some(b)) => {
                found.extra.push(b.key.clone());
                t.next();
            }
            (Some(a), Some(b)) => match a.key.cmp(&b.key) {
                Ordering::Less => {
                    found.missing.push(a.key.clone());
                    s.next();
                }
                Ordering::Greater => {
                    found.extra.push(b.key.clone());
                    t.next();
                }
                Ordering::Equal => {
                    if a.values != b.values {
                        found.different.push(a.key.clone());
                    }
                    s.next();
                    t.next();
                }
            },
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use milvus::proto::schema::{
        DataType, FloatArray, JsonArray, LongArray, ScalarField, StringArray, VectorField,
    };

    use super::*;

    fn longs(name: &str, data: Vec<i64>) -> FieldData {
        FieldData {
            r#type: DataType::Int64 as i32,
            field_name: name.into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::LongData(LongArray { data })),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn vectors(name: &str, dim: i64, data: Vec<f32>) -> FieldData {
        FieldData {
            r#type: DataType::FloatVector as i32,
            field_name: name.into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim,
                data: Some(vector_field::Data::FloatVector(FloatArray { data })),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn row(key: i64, v: u8) -> Row {
        Row {
            key: PrimaryKey::Int(key),
            values: vec![v],
        }
    }

    #[test]
    fn rows_come_out_sorted_by_key_with_every_value() {
        let columns = vec![
            vectors("v", 2, vec![1.0, 2.0, 3.0, 4.0]),
            longs("id", vec![9, 3]),
            FieldData {
                field_name: "$meta".into(),
                field: Some(field_data::Field::Scalars(ScalarField {
                    data: Some(scalar_field::Data::JsonData(JsonArray {
                        data: vec![b"{}".to_vec(), b"{\"a\":1}".to_vec()],
                    })),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ];
        let rows = rows(&columns, "id").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key, PrimaryKey::Int(3));
        assert_eq!(rows[1].key, PrimaryKey::Int(9));
        // PrimaryKey 3 is the second row of the reply: its vector is [3, 4], its JSON {"a":1}.
        let three = &rows[0].values;
        assert!(three.windows(7).any(|w| w == b"{\"a\":1}"));
        assert!(
            three
                .windows(4)
                .any(|w| w == 3.0f32.to_bits().to_le_bytes())
        );
        assert!(
            !three
                .windows(4)
                .any(|w| w == 1.0f32.to_bits().to_le_bytes())
        );
    }

    #[test]
    fn a_value_of_another_row_count_or_a_missing_key_is_an_error_not_a_guess() {
        let columns = vec![longs("id", vec![1, 2]), vectors("v", 2, vec![1.0, 2.0])];
        assert_eq!(
            rows(&columns, "id"),
            Err(RowsError::ShortColumn {
                field: "v".into(),
                rows: 2,
                found: 1
            })
        );
        assert_eq!(rows(&columns, "pk"), Err(RowsError::NoColumn("pk".into())));
    }

    #[test]
    fn string_keys_are_quoted_and_escaped_in_expressions() {
        assert_eq!(PrimaryKey::Int(-4).literal(), "-4");
        assert_eq!(PrimaryKey::Str(r#"a"b\c"#.into()).literal(), r#""a\"b\\c""#);
        let columns = vec![FieldData {
            field_name: "pk".into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::StringData(StringArray {
                    data: vec!["b".into(), "a".into()],
                })),
                ..Default::default()
            })),
            ..Default::default()
        }];
        let keys: Vec<PrimaryKey> = rows(&columns, "pk")
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(
            keys,
            [PrimaryKey::Str("a".into()), PrimaryKey::Str("b".into())]
        );
    }

    #[test]
    fn diff_names_missing_extra_and_different_keys() {
        let source = [row(1, 0), row(2, 0), row(4, 0), row(5, 0)];
        let target = [row(2, 0), row(3, 0), row(4, 1), row(5, 0), row(6, 0)];
        let found = diff(&source, &target);
        assert_eq!(found.missing, [PrimaryKey::Int(1)]);
        assert_eq!(found.extra, [PrimaryKey::Int(3), PrimaryKey::Int(6)]);
        assert_eq!(found.different, [PrimaryKey::Int(4)]);
        assert!(diff(&source, &source).is_empty());
        assert!(diff(&[], &[]).is_empty());
    }
}
