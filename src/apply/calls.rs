//! One vchannel's due rows turned into its next unit of work: a prefix of data rows with the
//! target calls that apply it, or the DDL row at its head.
//!
//! A batch is always a *prefix* of the vchannel's rows in journal order, so committing its last
//! position never skips a row. Inside the batch the rows are applied in (timestamp, rank, seq)
//! order, which puts an upsert's Delete before its Insert, and consecutive rows of one kind into
//! one collection and partition are merged into one target call, up to a size.

use super::columns::{MergedColumn, append_columns, head};
use crate::journal::JournalRow;
use crate::model::Operation;
use crate::model::{Change, CollectionRef, PrimaryKeys};

#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Insert {
        collection: CollectionRef,
        partition: String,
        num_rows: u64,
        /// `schema.FieldData` as the source encoded it, merged without decoding.
        fields_data: Vec<MergedColumn>,
    },
    Delete {
        collection: CollectionRef,
        partition: String,
        keys: PrimaryKeys,
    },
}

impl Call {
    pub fn collection(&self) -> &CollectionRef {
        match self {
            Call::Insert { collection, .. } | Call::Delete { collection, .. } => collection,
        }
    }

    pub fn collection_mut(&mut self) -> &mut CollectionRef {
        match self {
            Call::Insert { collection, .. } | Call::Delete { collection, .. } => collection,
        }
    }

    pub fn rows(&self) -> u64 {
        match self {
            Call::Insert { num_rows, .. } => *num_rows,
            Call::Delete { keys, .. } => keys.len() as u64,
        }
    }

    pub fn bytes(&self) -> u64 {
        match self {
            Call::Insert { fields_data, .. } => fields_data.iter().map(|c| c.len() as u64).sum(),
            Call::Delete { keys, .. } => keys.bytes(),
        }
    }

    pub fn operation(&self) -> Operation {
        match self {
            Call::Insert { .. } => Operation::Insert,
            Call::Delete { .. } => Operation::Delete,
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

/// A journal row whose insert columns do not decode: no call can be made of it.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("journal row {position} of {vchannel} has undecodable columns: {reason}")]
pub struct UndecodableRow {
    pub vchannel: String,
    pub position: String,
    pub reason: String,
}

/// `rows` are a vchannel's pending rows in journal order; `complete` says whether they are all
/// the applicable rows (not cut by a fetch limit). Rows at or before `in_copy_through` are in a
/// snapshot copy (see [`crate::model::CopyProgress::start_ts`]): they belong to the batch and
/// make no call. Merged calls stay under `max_call_bytes` (a single larger row is sent alone).
///
/// Invariants: the data is a prefix of `rows`, so committing its last position never skips a
/// row; it ends before the first DDL row, which comes alone; when `rows` are not `complete`
/// it ends before their last timestamp, which may go on past the limit, unless that
/// timestamp is all there is (the caller then read all of it). Within the prefix, calls
/// follow (timestamp, rank, seq): an upsert's Delete goes before its Insert.
pub fn next_step(
    rows: &[JournalRow],
    complete: bool,
    in_copy_through: u64,
    max_call_bytes: usize,
) -> Result<Step<'_>, UndecodableRow> {
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
        // the next batch so an upsert's Delete and Insert are never split. When it is all we
        // have, the caller read that timestamp whole.
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
    for row in ordered
        .into_iter()
        .filter(|r| r.position.ts > in_copy_through)
    {
        let undecodable = |e: prost::DecodeError| UndecodableRow {
            vchannel: row.vchannel.clone(),
            position: format!("{}/{}", row.position.ts, row.position.seq),
            reason: e.to_string(),
        };
        let call = match &row.change {
            Change::Insert(b) => {
                for column in &b.fields_data {
                    head(&column.0).map_err(undecodable)?;
                }
                Call::Insert {
                    collection: b.collection.clone(),
                    partition: b.partition.clone(),
                    num_rows: b.num_rows,
                    fields_data: b.fields_data.iter().map(MergedColumn::from).collect(),
                }
            }
            Change::Delete(b) => Call::Delete {
                collection: b.collection.clone(),
                partition: b.partition.clone(),
                keys: b.keys.clone(),
            },
            // The prefix ends before the first DDL row.
            Change::Ddl(_) => continue,
        };
        let merged = match calls.last_mut() {
            Some(last) if last.bytes() + call.bytes() <= max_call_bytes as u64 => {
                merge(last, &call).map_err(undecodable)?
            }
            _ => false,
        };
        if !merged {
            calls.push(call);
        }
    }
    Ok(Step::Data {
        rows: prefix,
        calls,
    })
}

/// Each vchannel's calls (`lanes`, sent side by side) as one lane when that sends no more
/// calls one after the other than the longest lane does: the calls at the same place in each
/// lane merged into one, each of one kind into one collection and partition, and under
/// `max_call_bytes`. Otherwise the lanes as they are.
///
/// Invariant: each vchannel's calls keep their order (the merged calls go one after the
/// other, in the order of their places). Across vchannels there is no order to keep: a key
/// lives on one vchannel, and the target hashes each row to its own shard whatever call
/// carries it.
pub fn merged_across_vchannels(lanes: Vec<Vec<Call>>, max_call_bytes: usize) -> Vec<Vec<Call>> {
    if lanes.len() < 2 {
        return lanes;
    }
    let depth = lanes.iter().map(Vec::len).max().unwrap_or(0);
    let mut merged: Vec<Call> = Vec::with_capacity(depth);
    for place in 0..depth {
        let mut at_place = lanes.iter().filter_map(|lane| lane.get(place));
        let Some(first) = at_place.next() else {
            continue;
        };
        let mut call = first.clone();
        for next in at_place {
            let fits = call.bytes() + next.bytes() <= max_call_bytes as u64;
            if !fits || !matches!(merge(&mut call, next), Ok(true)) {
                return lanes;
            }
        }
        merged.push(call);
    }
    vec![merged]
}

/// Appends `next` to `last` when both go to the same place with the same kind; false otherwise.
fn merge(last: &mut Call, next: &Call) -> Result<bool, prost::DecodeError> {
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
            if !append_columns(fields_data, f2)? {
                return Ok(false);
            }
            *num_rows += n2;
            Ok(true)
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
        ) if collection == c2 && partition == p2 => Ok(match (keys, k2) {
            (PrimaryKeys::Int64(a), PrimaryKeys::Int64(b)) => {
                a.extend_from_slice(b);
                true
            }
            (PrimaryKeys::VarChar(a), PrimaryKeys::VarChar(b)) => {
                a.extend_from_slice(b);
                true
            }
            _ => false,
        }),
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests;
