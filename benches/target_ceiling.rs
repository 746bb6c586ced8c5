//! The direct-insert ceiling of a target Milvus: the rows the replication bench wrote to the
//! source (int64 pk, float vector), inserted straight through our own gRPC client with the same
//! batch size. Prints one JSON line: {"rows": N, "seconds": S, "rows_per_s": R}.
//!
//! `cargo bench --bench target_ceiling -- <uri> <collection> <rows-file> <batch> [streams [dim]]`
//! (`streams` sequences of calls side by side, default 1; `dim` default 128); the collection
//! must exist with fields `id` (int64 pk) and `vec` (`dim`-dim float vector). The rows file holds
//! per row the id (i64) and the vector (`dim` f32), little endian. Run by scripts/bench.

use std::time::Instant;

use milvus::proto::milvus::InsertRequest;
use milvus::proto::milvus::milvus_service_client::MilvusServiceClient;
use milvus::proto::schema::{DataType, FieldData, FloatArray, LongArray, ScalarField, VectorField};
use milvus::proto::schema::{field_data, scalar_field, vector_field};

fn columns(rows: &[u8], dim: usize) -> Vec<FieldData> {
    let row_bytes = 8 + dim * 4;
    let ids: Vec<i64> = rows
        .chunks_exact(row_bytes)
        .map(|row| i64::from_le_bytes(row[..8].try_into().unwrap_or_default()))
        .collect();
    let vectors: Vec<f32> = rows
        .chunks_exact(row_bytes)
        .flat_map(|row| row[8..].chunks_exact(4))
        .map(|v| f32::from_le_bytes(v.try_into().unwrap_or_default()))
        .collect();
    vec![
        FieldData {
            r#type: DataType::Int64 as i32,
            field_name: "id".into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::LongData(LongArray { data: ids })),
                ..Default::default()
            })),
            ..Default::default()
        },
        FieldData {
            r#type: DataType::FloatVector as i32,
            field_name: "vec".into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim: dim as i64,
                data: Some(vector_field::Data::FloatVector(FloatArray {
                    data: vectors,
                })),
                ..Default::default()
            })),
            ..Default::default()
        },
    ]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; ignore flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (uri, collection, rows_file, batch, streams, dim) = match args.as_slice() {
        [uri, collection, rows_file, batch] => (uri, collection, rows_file, batch, "1", "128"),
        [uri, collection, rows_file, batch, streams] => {
            (uri, collection, rows_file, batch, streams.as_str(), "128")
        }
        [uri, collection, rows_file, batch, streams, dim] => (
            uri,
            collection,
            rows_file,
            batch,
            streams.as_str(),
            dim.as_str(),
        ),
        _ => {
            eprintln!(
                "usage: target_ceiling <uri> <collection> <rows-file> <batch> [streams [dim]]"
            );
            return Ok(());
        }
    };
    let rows = std::fs::read(rows_file)?;
    let (batch, streams, dim): (usize, usize, usize) =
        (batch.parse()?, streams.parse()?, dim.parse()?);
    let row_bytes = 8 + dim * 4;
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())?
        .connect()
        .await?;
    let client = MilvusServiceClient::new(channel).max_encoding_message_size(256 << 20);
    // Batches are dealt to `streams` sequences of calls that run side by side.
    let streams = streams.max(1);
    let mut sequences: Vec<Vec<(usize, Vec<FieldData>)>> = vec![Vec::new(); streams];
    for (i, part) in rows.chunks(batch * row_bytes).enumerate() {
        sequences[i % streams].push((part.len() / row_bytes, columns(part, dim)));
    }
    let rows = rows.len() / row_bytes;
    let started = Instant::now();
    futures::future::try_join_all(sequences.into_iter().map(|sequence| {
        let mut client = client.clone();
        async move {
            for (n, fields_data) in sequence {
                let request = InsertRequest {
                    collection_name: collection.clone(),
                    fields_data,
                    num_rows: n as u32,
                    ..Default::default()
                };
                let status = client
                    .insert(request)
                    .await?
                    .into_inner()
                    .status
                    .unwrap_or_default();
                if status.code != 0 {
                    return Err(format!("insert failed: {}", status.reason).into());
                }
            }
            Ok::<(), Box<dyn std::error::Error>>(())
        }
    }))
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"rows\": {rows}, \"seconds\": {seconds:.3}, \"rows_per_s\": {:.0}}}",
        rows as f64 / seconds
    );
    Ok(())
}
