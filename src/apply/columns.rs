//! Merging the columns of consecutive inserts while they stay in Milvus's encoding
//! (`schema.FieldData`, protobuf).
//!
//! Protobuf reads a repeated field that occurs twice as one list, and a message field that
//! occurs twice as the merge of both. So for most types, two encoded `FieldData` of one field
//! written one after the other *are* the encoded column holding the rows of both, and no value
//! is ever decoded. Types whose values sit in one singular `bytes` field (binary and 16-bit float
//! vectors) or carry a derived scalar (a sparse vector's `dim`) would keep only the last part:
//! those are decoded, appended and encoded again.

use bytes::Bytes;
use milvus::proto::schema::{DataType, FieldData, field_data, scalar_field, vector_field};
use prost::Message;

use crate::model::EncodedColumn;
use crate::proto::passthrough::{FieldDataHead, field_data_head};

/// One column of a target call: the encoded columns of consecutive inserts, which protobuf
/// reads, written one after the other, as a single column holding the rows of all. The parts
/// are the journal rows' own bytes, shared rather than copied; they are joined only when the
/// call is encoded.
///
/// Invariant: a column of more than one part has no `valid_data` in any part (parts are only
/// concatenated when neither side has any), so the head of its first part is the head of all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedColumn {
    parts: Vec<Bytes>,
}

impl MergedColumn {
    /// The encoded length of the whole column.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The whole column in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts.concat()
    }

    fn head(&self) -> Result<FieldDataHead, prost::DecodeError> {
        head(self.parts.first().map_or(&[][..], |part| part))
    }
}

impl From<&EncodedColumn> for MergedColumn {
    fn from(column: &EncodedColumn) -> Self {
        Self {
            parts: vec![column.0.clone()],
        }
    }
}

/// Appends the rows of `src` to `dst`, column by column. Leaves `dst` untouched and answers
/// `Ok(false)` when the two do not hold the same fields with types that merge.
pub fn append_columns(
    dst: &mut [MergedColumn],
    src: &[MergedColumn],
) -> Result<bool, prost::DecodeError> {
    if dst.len() != src.len() {
        return Ok(false);
    }
    // Decide every column before changing any, so a refusal leaves `dst` as it was.
    let mut merges = Vec::with_capacity(dst.len());
    for (d, s) in dst.iter().zip(src) {
        let (dh, sh) = (d.head()?, s.head()?);
        if dh.field_name != sh.field_name || dh.r#type != sh.r#type || dh.field_id != sh.field_id {
            return Ok(false);
        }
        let merge = if concatenates(dh.r#type)
            && dh.valid_data.is_empty()
            && sh.valid_data.is_empty()
            && same_values(&dh, &sh)
        {
            Merge::Concatenate
        } else {
            match decoded_append(d, s)? {
                Some(merged) => Merge::Replace(merged),
                None => return Ok(false),
            }
        };
        merges.push(merge);
    }
    for ((d, s), merge) in dst.iter_mut().zip(src).zip(merges) {
        match merge {
            Merge::Concatenate => d.parts.extend_from_slice(&s.parts),
            Merge::Replace(merged) => *d = merged,
        }
    }
    Ok(true)
}

/// The leading fields of an encoded column; its values are skipped, not decoded.
pub fn head(column: &[u8]) -> Result<FieldDataHead, prost::DecodeError> {
    FieldDataHead::decode(column)
}

/// Whether two columns hold values of one kind (and vectors of one dim), which protobuf reads
/// concatenated as one list. Of values of two kinds it keeps only the second's: a column
/// whose values are not of its type would drop the rows merged before it.
fn same_values(d: &FieldDataHead, s: &FieldDataHead) -> bool {
    use field_data_head::Values;
    match (&d.values, &s.values) {
        (Some(Values::Scalars(a)), Some(Values::Scalars(b))) => a.data.is_some() && a == b,
        (Some(Values::Vectors(a)), Some(Values::Vectors(b))) => a.float_vector.is_some() && a == b,
        _ => false,
    }
}

enum Merge {
    Concatenate,
    Replace(MergedColumn),
}

/// Types whose values are all in repeated fields (or messages of them), which protobuf
/// concatenates.
fn concatenates(data_type: i32) -> bool {
    DataType::try_from(data_type).is_ok_and(|t| {
        matches!(
            t,
            DataType::Bool
                | DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Float
                | DataType::Double
                | DataType::String
                | DataType::VarChar
                | DataType::Array
                | DataType::Json
                | DataType::FloatVector
        )
    })
}

fn decoded_append(
    d: &MergedColumn,
    s: &MergedColumn,
) -> Result<Option<MergedColumn>, prost::DecodeError> {
    let (mut d, s) = (
        FieldData::decode(d.to_vec().as_slice())?,
        FieldData::decode(s.to_vec().as_slice())?,
    );
    if !mergeable(&d, &s) {
        return Ok(None);
    }
    append_column(&mut d, &s);
    Ok(Some(MergedColumn {
        parts: vec![d.encode_to_vec().into()],
    }))
}

fn mergeable(d: &FieldData, s: &FieldData) -> bool {
    use field_data::Field;
    if !d.valid_data.is_empty() || !s.valid_data.is_empty() {
        return false;
    }
    match (&d.field, &s.field) {
        (Some(Field::Scalars(a)), Some(Field::Scalars(b))) => {
            use scalar_field::Data::*;
            a.valid_data.is_empty()
                && b.valid_data.is_empty()
                && matches!(
                    (&a.data, &b.data),
                    (Some(BoolData(_)), Some(BoolData(_)))
                        | (Some(IntData(_)), Some(IntData(_)))
                        | (Some(LongData(_)), Some(LongData(_)))
                        | (Some(FloatData(_)), Some(FloatData(_)))
                        | (Some(DoubleData(_)), Some(DoubleData(_)))
                        | (Some(StringData(_)), Some(StringData(_)))
                        | (Some(JsonData(_)), Some(JsonData(_)))
                        | (Some(ArrayData(_)), Some(ArrayData(_)))
                )
        }
        (Some(Field::Vectors(a)), Some(Field::Vectors(b))) => {
            use vector_field::Data::*;
            a.dim == b.dim
                && a.valid_data.is_empty()
                && b.valid_data.is_empty()
                && matches!(
                    (&a.data, &b.data),
                    (Some(FloatVector(_)), Some(FloatVector(_)))
                        | (Some(BinaryVector(_)), Some(BinaryVector(_)))
                        | (Some(Float16Vector(_)), Some(Float16Vector(_)))
                        | (Some(Bfloat16Vector(_)), Some(Bfloat16Vector(_)))
                )
        }
        _ => false,
    }
}

fn append_column(d: &mut FieldData, s: &FieldData) {
    use field_data::Field;
    match (&mut d.field, &s.field) {
        (Some(Field::Scalars(a)), Some(Field::Scalars(b))) => {
            use scalar_field::Data::*;
            match (&mut a.data, &b.data) {
                (Some(BoolData(x)), Some(BoolData(y))) => x.data.extend_from_slice(&y.data),
                (Some(IntData(x)), Some(IntData(y))) => x.data.extend_from_slice(&y.data),
                (Some(LongData(x)), Some(LongData(y))) => x.data.extend_from_slice(&y.data),
                (Some(FloatData(x)), Some(FloatData(y))) => x.data.extend_from_slice(&y.data),
                (Some(DoubleData(x)), Some(DoubleData(y))) => x.data.extend_from_slice(&y.data),
                (Some(StringData(x)), Some(StringData(y))) => x.data.extend_from_slice(&y.data),
                (Some(JsonData(x)), Some(JsonData(y))) => x.data.extend_from_slice(&y.data),
                (Some(ArrayData(x)), Some(ArrayData(y))) => x.data.extend_from_slice(&y.data),
                _ => {}
            }
        }
        (Some(Field::Vectors(a)), Some(Field::Vectors(b))) => {
            use vector_field::Data::*;
            match (&mut a.data, &b.data) {
                (Some(FloatVector(x)), Some(FloatVector(y))) => x.data.extend_from_slice(&y.data),
                (Some(BinaryVector(x)), Some(BinaryVector(y)))
                | (Some(Float16Vector(x)), Some(Float16Vector(y)))
                | (Some(Bfloat16Vector(x)), Some(Bfloat16Vector(y))) => x.extend_from_slice(y),
                _ => {}
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
