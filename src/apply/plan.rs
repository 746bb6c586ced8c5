//! Cutting the pending rows of one vchannel into the next unit of work.
//!
//! A batch is always a *prefix* of the vchannel's rows in journal order, so committing its last
//! position never skips a row. Inside the batch the rows are applied in (timestamp, rank, seq)
//! order, which puts an upsert's Delete before its Insert, and consecutive rows of one kind into
//! one collection and partition are merged into one target call.

use milvus::proto::schema::{FieldData, field_data, scalar_field, vector_field};
use prost::Message;

use crate::journal::{Change, CollectionRef, JournalRow, PrimaryKeys};

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Insert {
        collection: CollectionRef,
        partition: String,
        num_rows: u64,
        fields_data: Vec<FieldData>,
    },
    Delete {
        collection: CollectionRef,
        partition: String,
        keys: PrimaryKeys,
    },
}

impl Call {
    pub fn rows(&self) -> u64 {
        match self {
            Call::Insert { num_rows, .. } => *num_rows,
            Call::Delete { keys, .. } => keys.len() as u64,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Step<'a> {
    /// Nothing can be applied on this vchannel now.
    Idle,
    /// Data rows: a prefix of the pending rows and the calls that apply it.
    Data {
        rows: &'a [JournalRow],
        calls: Vec<Call>,
    },
    /// A DDL row at the head: applied once every vchannel of its barrier has it at its head.
    Ddl(&'a JournalRow),
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("journal row {position} of {vchannel} has undecodable columns: {reason}")]
pub struct PlanError {
    pub vchannel: String,
    pub position: String,
    pub reason: String,
}

/// `rows` are a vchannel's pending rows in journal order; `complete` says whether they are all
/// the applicable rows (not cut by a fetch limit).
pub fn next_step(rows: &[JournalRow], complete: bool) -> Result<Step<'_>, PlanError> {
    let Some(first) = rows.first() else {
        return Ok(Step::Idle);
    };
    if matches!(first.change, Change::Ddl(_)) {
        return Ok(Step::Ddl(first));
    }
    let mut end = rows
        .iter()
        .position(|r| matches!(r.change, Change::Ddl(_)))
        .unwrap_or(rows.len());
    if end == rows.len() && !complete {
        // Rows of the last timestamp may continue past the fetch limit: leave that timestamp for
        // the next batch so an upsert's Delete and Insert are never split (unless it is all we have).
        let last_ts = rows[end - 1].position.ts;
        let cut = rows[..end]
            .iter()
            .rposition(|r| r.position.ts != last_ts)
            .map_or(0, |i| i + 1);
        if cut > 0 {
            end = cut;
        }
    }
    let prefix = &rows[..end];
    let mut ordered: Vec<&JournalRow> = prefix.iter().collect();
    ordered.sort_by_key(|r| {
        (
            r.position.ts,
            r.change.rank_within_timestamp(),
            r.position.seq,
        )
    });
    let mut calls: Vec<Call> = Vec::new();
    for row in ordered {
        let call = match &row.change {
            Change::Insert(b) => Call::Insert {
                collection: b.collection.clone(),
                partition: b.partition.clone(),
                num_rows: b.num_rows,
                fields_data: decode_fields(row, &b.fields_data)?,
            },
            Change::Delete(b) => Call::Delete {
                collection: b.collection.clone(),
                partition: b.partition.clone(),
                keys: b.keys.clone(),
            },
            // The prefix ends before the first DDL row.
            Change::Ddl(_) => continue,
        };
        let merged = calls.last_mut().is_some_and(|last| merge(last, &call));
        if !merged {
            calls.push(call);
        }
    }
    Ok(Step::Data {
        rows: prefix,
        calls,
    })
}

fn decode_fields(row: &JournalRow, encoded: &[Vec<u8>]) -> Result<Vec<FieldData>, PlanError> {
    encoded
        .iter()
        .map(|bytes| {
            FieldData::decode(bytes.as_slice()).map_err(|e| PlanError {
                vchannel: row.vchannel.clone(),
                position: format!("{}/{}", row.position.ts, row.position.seq),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Appends `next` to `last` when both go to the same place with the same kind; false otherwise.
fn merge(last: &mut Call, next: &Call) -> bool {
    match (last, next) {
        (
            Call::Insert {
                collection,
                partition,
                num_rows,
                fields_data,
            },
            Call::Insert {
                collection: c2,
                partition: p2,
                num_rows: n2,
                fields_data: f2,
            },
        ) if collection == c2 && partition == p2 => {
            if !append_columns(fields_data, f2) {
                return false;
            }
            *num_rows += n2;
            true
        }
        (
            Call::Delete {
                collection,
                partition,
                keys,
            },
            Call::Delete {
                collection: c2,
                partition: p2,
                keys: k2,
            },
        ) if collection == c2 && partition == p2 => match (keys, k2) {
            (PrimaryKeys::Int64(a), PrimaryKeys::Int64(b)) => {
                a.extend_from_slice(b);
                true
            }
            (PrimaryKeys::VarChar(a), PrimaryKeys::VarChar(b)) => {
                a.extend_from_slice(b);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Column-wise append of one insert's fields to another's. Leaves `dst` untouched and answers
/// false if the two do not have the same fields of the same mergeable kinds.
fn append_columns(dst: &mut [FieldData], src: &[FieldData]) -> bool {
    if dst.len() != src.len()
        || dst
            .iter()
            .zip(src)
            .any(|(d, s)| d.field_name != s.field_name || d.r#type != s.r#type || !mergeable(d, s))
    {
        return false;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        append_column(d, s);
    }
    true
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
