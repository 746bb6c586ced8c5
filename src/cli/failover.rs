//! `milvus-cdc failover --task ID`: fails a task over (`POST /v1/tasks/{id}/failover`) and
//! waits, up to `--timeout`, until it has: the source is gone, and the target takes over. The
//! report says how far the target is consistent and what it could not take.

use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;

use super::task::{Client, ClientError, ServerArgs, task_path};
use milvus_cdc::task::TaskState;
use milvus_cdc::task::failover::FailoverReport;

#[derive(Args)]
pub struct FailoverArgs {
    /// The task whose source is gone.
    #[arg(long = "task")]
    task_id: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// What the command reads of the task: a renamed field fails here, not as a blank.
#[derive(Deserialize)]
struct TaskReply {
    task_id: String,
    state: TaskState,
    reason: String,
    failover: Option<FailoverReport>,
}

/// How often the task is asked again while it fails over.
const ASK_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: FailoverArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.server, Duration::ZERO)?;
    let path = task_path(&args.task_id, "");
    let mut task: TaskReply = typed(client.call("POST", &format!("{path}/failover"), None)?)?;
    let deadline = Instant::now() + args.server.timeout();
    let mut shown = String::new();
    while task.state != TaskState::FailedOver {
        if task.state != TaskState::FailingOver {
            return Err(ClientError::Reply(format!(
                "task {} is {:?}, not failing over",
                task.task_id, task.state
            )));
        }
        if !task.reason.is_empty() && task.reason != shown {
            eprintln!("failing over: {}", task.reason);
            shown = task.reason.clone();
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Reply(format!(
                "task {} is still failing over after {} s{}; run the command again to wait more",
                task.task_id,
                args.server.timeout().as_secs(),
                if task.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", task.reason)
                }
            )));
        }
        std::thread::sleep(ASK_EVERY);
        task = typed(client.call("GET", &path, None)?)?;
    }
    let Some(report) = task.failover else {
        return Err(ClientError::Reply(format!(
            "task {} failed over with no report",
            task.task_id
        )));
    };
    if args.server.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| ClientError::Reply(e.to_string()))?
        );
    } else {
        print!("{}", render(&task.task_id, &report));
    }
    Ok(())
}

fn typed(reply: serde_json::Value) -> Result<TaskReply, ClientError> {
    serde_json::from_value(reply).map_err(|e| ClientError::Reply(format!("task: {e}")))
}

/// The report for people.
fn render(task: &str, report: &FailoverReport) -> String {
    let mut out = format!("task {task} failed over at {}\n", report.finished);
    match &report.consistent_through {
        Some(point) => {
            out += &format!(
                "the target holds the source as of {} (hybrid timestamp {})\n",
                point.time, point.timestamp
            )
        }
        None => out += "no consistency point: nothing of the source was staged through a tick\n",
    }
    for channel in &report.channels {
        out += &format!(
            "  channel {}: applied through its tick of {}\n",
            channel.channel, channel.last_tick.time
        );
    }
    for c in &report.collections {
        match (c.rows, &c.error) {
            (Some(rows), _) => {
                out += &format!(
                    "  collection {}.{}: {rows} rows on the target\n",
                    c.database, c.collection
                )
            }
            (None, error) => {
                out += &format!(
                    "  collection {}.{}: rows not counted ({})\n",
                    c.database,
                    c.collection,
                    error.as_deref().unwrap_or("no answer")
                )
            }
        }
    }
    if let Some(poison) = &report.poison {
        out += &format!("stopped on a change the target refuses: {poison}\n");
    }
    out += &format!(
        "held, not applied: {} changes ({} rows) in {}\nreport: {}\n",
        report.held.changes, report.held.rows, report.held.file, report.report_file
    );
    out
}
