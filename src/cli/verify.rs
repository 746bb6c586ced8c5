//! `milvus-cdc verify --task ID`: asks the server to compare a task's source and target
//! (`POST /v1/tasks/{id}/verify`), and answers like `diff`: exit status 0 when they are
//! equal, 1 when it found a difference, 2 when it could not tell.

use clap::Args;
use serde_json::{Value, json};

use std::time::Duration;

use super::task::{Client, ClientError, ServerArgs, task_path, text};

#[derive(Args)]
pub struct VerifyArgs {
    /// The task whose collections are compared.
    #[arg(long = "task")]
    task_id: String,
    /// Keys listed per kind of difference and collection (all are counted).
    #[arg(long, default_value_t = 10)]
    first: u16,
    /// How long a key found different may wait for the target to catch up before it is
    /// reported.
    #[arg(long, default_value_t = 60)]
    settle_seconds: u16,
    #[command(flatten)]
    server: ServerArgs,
}

/// What the comparison found.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Equal,
    Different,
    /// Some collection could not be compared.
    Incomplete,
}

pub fn run(args: VerifyArgs) -> Result<Verdict, ClientError> {
    // A comparison reads every row of both sides and waits up to `settle_seconds` for keys
    // that differ: it may take much longer than other calls.
    let settling = Duration::from_secs(u64::from(args.settle_seconds)) * 2;
    let client = Client::new(&args.server, settling)?;
    let body = json!({ "first": args.first, "settle_seconds": args.settle_seconds });
    let report = client.call("POST", &task_path(&args.task_id, "/verify"), Some(body))?;
    if args.server.json {
        println!("{report}");
    } else {
        print!("{}", render(&report));
    }
    Ok(if report["equal"] != Value::Bool(true) {
        Verdict::Different
    } else if report["complete"] != Value::Bool(true) {
        Verdict::Incomplete
    } else {
        Verdict::Equal
    })
}

/// The report for people: a line per collection, then the keys that differ.
fn render(report: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for c in report["collections"].as_array().unwrap_or(&empty) {
        let counts: Vec<String> = c["partitions"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|p| {
                format!(
                    "{} {}/{}",
                    text(&p["partition"]),
                    text(&p["source_rows"]),
                    text(&p["target_rows"])
                )
            })
            .collect();
        let verdict = if let Some(why) = c.get("not_compared") {
            format!("NOT COMPARED: {}", text(why))
        } else if ["missing", "extra", "different"]
            .iter()
            .all(|k| c[k]["count"] == json!(0))
        {
            format!("equal ({} rows)", text(&c["rows_compared"]))
        } else {
            format!(
                "DIFFERENT: {} missing, {} extra, {} different of {} rows",
                text(&c["missing"]["count"]),
                text(&c["extra"]["count"]),
                text(&c["different"]["count"]),
                text(&c["rows_compared"])
            )
        };
        out += &format!(
            "{} -> {}: {verdict}; rows per partition (source/target): {}\n",
            text(&c["source"]),
            text(&c["target"]),
            counts.join(", ")
        );
        for kind in ["missing", "extra", "different"] {
            let first = c[kind]["first"].as_array().unwrap_or(&empty);
            if !first.is_empty() {
                let keys: Vec<String> = first.iter().map(text).collect();
                out += &format!("  {kind}: {}\n", keys.join(", "));
            }
        }
    }
    out += &format!(
        "checked at {}; the target holds the source's state as of {}\n",
        text(&report["checked_at"]["time"]),
        report
            .get("consistent_through")
            .map_or("(no consistency point yet)".to_owned(), |t| text(
                &t["time"]
            ))
    );
    out
}
