//! `milvus-cdc reapply --dir DIR --uri URI`: puts back the rows a repair replaced or deleted
//! (`{data_dir}/repair/TASK/*.jsonl`, see `snapshot::repair`), upserting each saved page into
//! the Milvus at `--uri`, as they were before the repair. Run it against the repaired cluster
//! to undo a repair, or against any cluster to keep what the old primary held.

use std::path::PathBuf;

use clap::Args;
use milvus::proto::milvus::UpsertRequest;
use milvus_cdc::milvus_client::{self, failure};
use milvus_cdc::snapshot::SavedRows;

#[derive(Args)]
pub struct ReapplyArgs {
    /// A folder of saved pages (each `*.jsonl` in it is read, in name order) or one file.
    #[arg(long)]
    dir: PathBuf,
    /// The Milvus the rows go to (`http(s)://host:port`).
    #[arg(long)]
    uri: String,
    /// `user:password` or an API key of that Milvus.
    #[arg(
        long,
        env = "MILVUS_CDC_TARGET_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    /// PEM CA certificate(s) an `https://` uri must chain to.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReapplyError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Milvus(String),
    #[error("upserting into {collection} (partition {partition:?}): {reason}")]
    Upsert {
        collection: String,
        partition: String,
        reason: String,
    },
}

pub fn run(args: ReapplyArgs) -> Result<(), ReapplyError> {
    let file_error = |path: &std::path::Path, reason: String| ReapplyError::File {
        path: path.display().to_string(),
        reason,
    };
    let mut files: Vec<PathBuf> = if args.dir.is_dir() {
        std::fs::read_dir(&args.dir)
            .map_err(|e| file_error(&args.dir, e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect()
    } else {
        vec![args.dir.clone()]
    };
    files.sort();
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| ReapplyError::Milvus(e.to_string()))?;
    let (_, client) = milvus_client::connect(
        "target",
        &args.uri,
        Some(&args.token),
        args.ca_file.as_deref(),
        runtime.handle(),
    )
    .map_err(ReapplyError::Milvus)?;
    let mut rows = 0u64;
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let page: SavedRows =
                serde_json::from_str(line).map_err(|e| file_error(path, e.to_string()))?;
            let fields_data = page.columns().map_err(|e| file_error(path, e))?;
            let upsert_error = |reason: String| ReapplyError::Upsert {
                collection: format!("{}.{}", page.database, page.collection),
                partition: page.partition.clone(),
                reason,
            };
            let request = UpsertRequest {
                db_name: page.database.clone(),
                collection_name: page.collection.clone(),
                partition_name: page.partition.clone(),
                fields_data,
                num_rows: page.num_rows,
                ..Default::default()
            };
            let reply = runtime
                .block_on(client.clone().upsert(request))
                .map_err(|e| upsert_error(e.message().to_owned()))?
                .into_inner();
            if let Some(reason) = failure(reply.status.as_ref()) {
                return Err(upsert_error(reason));
            }
            rows += u64::from(page.num_rows);
        }
    }
    println!(
        "{rows} rows put back from {} files into {}",
        files.len(),
        args.uri
    );
    Ok(())
}
