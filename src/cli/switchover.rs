//! `milvus-cdc switchover --task ID [--timeout 300] [--verify]`: a planned move of the writes
//! from the task's source to its target (`POST /v1/tasks/{id}/switchover`): the source
//! fenced, the target caught up (RPO 0), the task paused and its reverse task running. Prints
//! the write outage and the proof that nothing was lost.

use std::time::Duration;

use clap::Args;
use serde_json::json;

use super::task::{Client, ClientError, ServerArgs, task_path};
use milvus_cdc::task::switchover::SwitchoverReport;

#[derive(Args)]
pub struct SwitchoverArgs {
    /// The task whose target becomes the primary.
    #[arg(long = "task")]
    task_id: String,
    /// Compare the collections row by row before the reverse task starts.
    #[arg(long)]
    verify: bool,
    /// The reverse task's id (`ID-reverse` when not given).
    #[arg(long)]
    reverse_task_id: Option<String>,
    /// `--timeout` is how long the source may stay fenced before the target has caught up:
    /// past it, the switchover is called off and everything left as it was.
    #[command(flatten)]
    server: ServerArgs,
}

/// Beyond `--timeout`: a verify, and the reverse task's create.
const MORE_THAN_THE_DRAIN: Duration = Duration::from_secs(600);

pub fn run(args: SwitchoverArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.server, MORE_THAN_THE_DRAIN)?;
    let mut body = json!({
        "timeout_seconds": args.server.timeout().as_secs(),
        "verify": args.verify,
    });
    if let Some(reverse) = &args.reverse_task_id {
        body["reverse_task_id"] = json!(reverse);
    }
    let reply = client.call("POST", &task_path(&args.task_id, "/switchover"), Some(body))?;
    let report: SwitchoverReport = serde_json::from_value(reply)
        .map_err(|e| ClientError::Reply(format!("switchover report: {e}")))?;
    if args.server.json {
        let text =
            serde_json::to_string_pretty(&report).map_err(|e| ClientError::Reply(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", render(&args.task_id, &report));
    }
    Ok(())
}

fn render(task: &str, r: &SwitchoverReport) -> String {
    let mut out = format!(
        "task {task} switched over: {} is the primary, task {} replicates it to {}\n",
        r.new_primary, r.reverse_task, r.old_primary
    );
    out += &format!(
        "write outage: {:.1} s (from the fence to the reverse task running)\n",
        r.write_outage_ms as f64 / 1000.0
    );
    out += &format!(
        "RPO 0: {} refused writes from {} (hybrid {}); {} held everything through {}\n",
        r.old_primary,
        r.fence_ts.time,
        r.fence_ts.timestamp,
        r.new_primary,
        r.consistent_through.time
    );
    out += &match &r.newest_write {
        Some(w) => format!(
            "newest write of {} replicated: {} (before the fence)\n",
            r.old_primary, w.time
        ),
        None => format!(
            "no write of {} was read while the task ran this time\n",
            r.old_primary
        ),
    };
    if let Some(equal) = r.verified_equal {
        out += &format!(
            "verified row by row: {}\n",
            if equal { "equal" } else { "different" }
        );
    }
    out
}
