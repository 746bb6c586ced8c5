//! `milvus-cdc task ...`: the REST API from a shell, as tables for people or `--json` for scripts.

use std::path::{Path, PathBuf};

use std::time::Duration;

use clap::{Args, Subcommand};
use milvus_cdc::model::{CaFile, CaFileError};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

/// How to reach the server; shared by `task` and `verify`.
#[derive(Args)]
pub struct ServerArgs {
    /// The milvus-cdc server. Like every option here, it may come before or after the
    /// subcommand (`task list --server URL`).
    #[arg(
        long,
        global = true,
        env = "MILVUS_CDC_SERVER",
        default_value = "http://127.0.0.1:8444"
    )]
    server: String,
    /// The API's bearer token, if it has one.
    #[arg(
        long,
        global = true,
        env = "MILVUS_CDC_API_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print the server's JSON reply instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM CA certificate(s) an `https://` server's certificate must chain to, instead of the
    /// public web roots: the CA of the API's `[api] tls_cert_file`.
    #[arg(long, global = true, env = "MILVUS_CDC_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Seconds to wait for the server's answer (a create or delete waits for the source's
    /// etcd and broker, or for a task's threads to stop). Connecting gives up after 10 s.
    #[arg(long, global = true, default_value_t = 300)]
    timeout: u64,
}

impl ServerArgs {
    /// How long to wait for the server's answer (`--timeout`).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

#[derive(Args)]
pub struct TaskArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Every task, one line each.
    List,
    /// One task.
    Get {
        task_id: String,
        /// While its snapshot copy runs, show it again every 2 s, the copy as progress bars.
        #[arg(long)]
        watch: bool,
    },
    /// A new task replicating to `--target-uri`, or to the configured `--target-cluster`.
    Create {
        #[arg(
            long,
            required_unless_present = "target_cluster",
            conflicts_with = "target_cluster"
        )]
        target_uri: Option<String>,
        /// The target by its cluster's name in the appliance's config (`[clusters.NAME]`).
        #[arg(long)]
        target_cluster: Option<String>,
        /// The cluster to read, by its name in the appliance's config; `source` when not
        /// given.
        #[arg(long)]
        source_cluster: Option<String>,
        /// `user:password` or an API key of the target.
        #[arg(
            long,
            env = "MILVUS_CDC_TARGET_TOKEN",
            hide_env_values = true,
            default_value = ""
        )]
        target_token: String,
        /// A collection of the default database, or `*` for all; repeatable.
        #[arg(long = "collection", default_value = "*")]
        collections: Vec<String>,
        /// `latest` (changes from now on), `earliest` (existing collections whole, from what the
        /// broker retains), `snapshot` (changes from now on, and the rows that exist now
        /// copied first) or `repair` (as `snapshot`, onto a target that has rows already:
        /// made equal by difference, what it replaces or deletes saved first).
        #[arg(long, default_value = "latest")]
        start: String,
        #[arg(long)]
        task_id: Option<String>,
        /// Pass over messages and rows that cannot be replicated (each logged and counted)
        /// instead of stopping the task on them.
        #[arg(long)]
        skip_poison: bool,
        /// Replicate access control too: roles, their grants, users' bindings to roles.
        #[arg(long)]
        rbac: bool,
        /// The password users get on the target (the source keeps only hashes); without it,
        /// users are not made there. Implies `--rbac`.
        #[arg(long, env = "MILVUS_CDC_RBAC_USER_PASSWORD", hide_env_values = true)]
        rbac_user_password: Option<String>,
    },
    /// Stop reading and applying; the journal is kept.
    Pause { task_id: String },
    /// Continue a paused or failed task from its journal.
    Resume { task_id: String },
    /// Move a task stopped on a poison (a message or row it cannot replicate) past exactly
    /// that one, and run it again. Logged by the server.
    Skip { task_id: String },
    /// Remove the task and its journal.
    Delete { task_id: String },
    /// Source offsets per channel and applied positions per vchannel.
    Positions { task_id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the milvus-cdc server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("the milvus-cdc server at {server} did not answer within {} s", .after.as_secs())]
    TimedOut { server: String, after: Duration },
    #[error("{message} (HTTP {status})")]
    Rejected { status: u16, message: String },
    #[error("the server's reply is not JSON: {0}")]
    Reply(String),
    #[error(transparent)]
    Ca(#[from] CaFileError),
}

pub fn run(args: TaskArgs) -> Result<(), ClientError> {
    let client = Client::new(&args.server, Duration::ZERO)?;
    let (reply, render): (Value, fn(&Value) -> String) = match args.command {
        TaskCommand::List => (client.call("GET", "/v1/tasks", None)?, task_table),
        TaskCommand::Get { task_id, watch } => {
            let path = task_path(&task_id, "");
            let mut task = client.call("GET", &path, None)?;
            while watch && !copy_done(&task) {
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    // Clear the screen and start at its top, as `watch` does.
                    print!("\x1b[2J\x1b[H");
                }
                if args.server.json {
                    println!("{task}");
                } else {
                    println!("{}", task_details(&task));
                }
                std::thread::sleep(std::time::Duration::from_secs(2));
                task = client.call("GET", &path, None)?;
            }
            (task, task_details)
        }
        TaskCommand::Create {
            target_uri,
            target_cluster,
            source_cluster,
            target_token,
            collections,
            start,
            task_id,
            skip_poison,
            rbac,
            rbac_user_password,
        } => {
            let rbac = (rbac || rbac_user_password.is_some())
                .then(|| json!({ "user_password": rbac_user_password }));
            let connect = target_uri.map(|uri| json!({ "uri": uri, "token": target_token }));
            let body = json!({
                "milvus_connect_param": connect,
                "target_cluster": target_cluster,
                "source_cluster": source_cluster,
                "collection_infos": collections.iter().map(|c| json!({ "name": c })).collect::<Vec<_>>(),
                "start_position": start,
                "task_id": task_id,
                "skip_poison": skip_poison,
                "rbac": rbac,
            });
            (client.call("POST", "/v1/tasks", Some(body))?, task_details)
        }
        TaskCommand::Pause { task_id } => (
            client.call("POST", &task_path(&task_id, "/pause"), None)?,
            task_details,
        ),
        TaskCommand::Resume { task_id } => (
            client.call("POST", &task_path(&task_id, "/resume"), None)?,
            task_details,
        ),
        TaskCommand::Skip { task_id } => {
            // The skip names the poison this task shows, so a repeated call never skips another.
            let task = client.call("GET", &task_path(&task_id, ""), None)?;
            let Some(at) = task.get("poison").map(|p| p["at"].clone()) else {
                return Err(ClientError::Rejected {
                    status: 409,
                    message: format!("task {task_id} is not stopped on a poison"),
                });
            };
            eprintln!("skipping {}", text(&task["reason"]));
            let body = json!({ "at": at });
            (
                client.call("POST", &task_path(&task_id, "/skip"), Some(body))?,
                task_details,
            )
        }
        TaskCommand::Delete { task_id } => {
            client.call("DELETE", &task_path(&task_id, ""), None)?;
            (json!({ "deleted": task_id }), |r| {
                format!("deleted {}", text(&r["deleted"]))
            })
        }
        TaskCommand::Positions { task_id } => (
            client.call("GET", &task_path(&task_id, "/positions"), None)?,
            positions_table,
        ),
    };
    if args.server.json {
        println!("{reply}");
    } else {
        println!("{}", render(&reply));
    }
    Ok(())
}

/// TLS for an `https://` server: the CA file's certificates as the only roots, if one is given.
fn tls_config(ca_file: Option<&Path>) -> Result<TlsConfig, ClientError> {
    let Some(path) = ca_file else {
        return Ok(TlsConfig::default());
    };
    let ca = CaFile::read(path)?;
    // `CaFile::read` has parsed every certificate once already.
    let certs: Vec<_> = CertificateDer::pem_slice_iter(ca.pem())
        .flatten()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

/// A server that does not accept the connection in this long is down or unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Characters of a task id sent as they are in a path: any other is percent-encoded, so an id
/// cannot name another route (`/`, `?`, `#`, `..`) or make an invalid URL; the server then
/// says what is wrong with it.
const PATH_ID: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_');

/// `/v1/tasks/{id}{rest}`, the id percent-encoded.
pub fn task_path(id: &str, rest: &str) -> String {
    format!("/v1/tasks/{}{rest}", utf8_percent_encode(id, PATH_ID))
}

pub struct Client {
    server: String,
    token: Option<String>,
    agent: ureq::Agent,
    answer_within: Duration,
}

impl Client {
    /// A client whose calls give up when the server does not answer within `--timeout`, plus
    /// `longer` for a call known to take longer.
    pub fn new(args: &ServerArgs, longer: Duration) -> Result<Self, ClientError> {
        let answer_within = Duration::from_secs(args.timeout) + longer;
        Ok(Self {
            server: args.server.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .tls_config(tls_config(args.ca_file.as_deref())?)
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .timeout_recv_response(Some(answer_within))
                .timeout_recv_body(Some(answer_within))
                .build()
                .into(),
            answer_within,
        })
    }

    /// One API call: the JSON reply of a 2xx answer (`null` when it has no body), else the
    /// server's error message.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.server);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        // A connect timeout is a server out of reach; any other, a server that does not answer.
        let unreachable = |e: ureq::Error| match e {
            ureq::Error::Timeout(kind) if !matches!(kind, ureq::Timeout::Connect) => {
                ClientError::TimedOut {
                    server: self.server.clone(),
                    after: self.answer_within,
                }
            }
            e => ClientError::Unreachable {
                server: self.server.clone(),
                reason: e.to_string(),
            },
        };
        let mut response = match (method, body) {
            ("GET", _) => with_auth(self.agent.get(&url), &auth).call(),
            ("DELETE", _) => with_auth(self.agent.delete(&url), &auth).call(),
            (_, Some(body)) => with_auth(self.agent.post(&url), &auth)
                .header("content-type", "application/json")
                .send(body.to_string()),
            (_, None) => with_auth(self.agent.post(&url), &auth).send_empty(),
        }
        .map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(unreachable)?;
        let reply: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|_| ClientError::Reply(text.clone()))?
        };
        if (200..300).contains(&status) {
            Ok(reply)
        } else {
            Err(ClientError::Rejected {
                status,
                message: reply["message"].as_str().unwrap_or(&text).to_owned(),
            })
        }
    }
}

fn with_auth<B>(
    request: ureq::RequestBuilder<B>,
    auth: &Option<String>,
) -> ureq::RequestBuilder<B> {
    match auth {
        Some(auth) => request.header("authorization", auth),
        None => request,
    }
}

pub fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn collections(task: &Value) -> String {
    task["collection_infos"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| text(&c["name"]))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    std::iter::once(line(header.iter().map(|h| h.to_string()).collect()))
        .chain(rows.iter().map(|r| line(r.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn task_table(reply: &Value) -> String {
    let rows: Vec<Vec<String>> = reply["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .map(|t| {
                    vec![
                        text(&t["task_id"]),
                        text(&t["state"]),
                        text(&t["milvus_connect_param"]["uri"]),
                        collections(t),
                        text(&t["reason"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["TASK", "STATE", "TARGET", "COLLECTIONS", "REASON"], &rows)
}

fn task_details(task: &Value) -> String {
    let mut rows = vec![
        vec!["task".into(), text(&task["task_id"])],
        vec!["state".into(), text(&task["state"])],
        vec!["target".into(), text(&task["milvus_connect_param"]["uri"])],
        vec!["collections".into(), collections(task)],
        vec!["reason".into(), text(&task["reason"])],
        vec!["consistent".into(), consistent_through(task)],
    ];
    if let Some(owner) = task["owner"].as_str() {
        rows.push(vec!["owner".into(), owner.to_owned()]);
    }
    let mut out = table(&["FIELD", "VALUE"], &rows);
    for copy in task["snapshot"].as_array().into_iter().flatten() {
        out += &format!("\n{}", copy_progress(copy));
    }
    out
}

/// Whether the task has no snapshot copy left to make.
fn copy_done(task: &Value) -> bool {
    task["snapshot"]
        .as_array()
        .is_none_or(|copies| copies.iter().all(|c| c["done"] == Value::Bool(true)))
}

/// One collection's snapshot copy as a progress bar:
/// `default.c [########------------]  40%  4000/10000 rows  1234 rows/s  5 s left`.
fn copy_progress(copy: &Value) -> String {
    const WIDTH: usize = 20;
    let copied = copy["rows_copied"].as_u64().unwrap_or(0);
    let of = copy["source_rows"].as_u64().unwrap_or(0);
    let done = copy["done"].as_bool().unwrap_or(false);
    let share = if done || of == 0 {
        if done { 1.0 } else { 0.0 }
    } else {
        (copied as f64 / of as f64).min(1.0)
    };
    let filled = (share * WIDTH as f64).round() as usize;
    let mut line = format!(
        "{} [{}{}] {:>3.0}%  {copied}/{of} rows",
        text(&copy["collection"]),
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        share * 100.0
    );
    if done {
        line += "  copied";
    } else if let Some(rate) = copy["rows_per_second"].as_f64() {
        line += &format!("  {rate:.0} rows/s");
        if let Some(left) = copy["seconds_left"].as_f64() {
            line += &format!("  {left:.0} s left");
        }
    }
    line
}

/// `<time> (rpo <seconds> s)`, or empty while the task has no consistency point.
fn consistent_through(task: &Value) -> String {
    let point = &task["consistent_through"];
    match point["rpo_seconds"].as_f64() {
        Some(rpo) => format!("{} (rpo {rpo:.1} s)", text(&point["time"])),
        None => String::new(),
    }
}

fn positions_table(reply: &Value) -> String {
    let list = |key: &str, fields: &[&str]| -> Vec<Vec<String>> {
        reply[key]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|item| fields.iter().map(|f| text(&item[*f])).collect())
                    .collect()
            })
            .unwrap_or_default()
    };
    format!(
        "{}\n\n{}",
        table(
            &["CHANNEL", "NEXT_OFFSET", "TICK"],
            &list("channels", &["channel", "next_offset", "tick"])
        ),
        table(
            &["VCHANNEL", "APPLIED_TS", "APPLIED_SEQ"],
            &list("applied", &["vchannel", "ts", "seq"])
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_goes_into_its_path_percent_encoded() {
        assert_eq!(task_path("rest-1_a", "/pause"), "/v1/tasks/rest-1_a/pause");
        assert_eq!(
            task_path("a b/../c?d#e", ""),
            "/v1/tasks/a%20b%2F%2E%2E%2Fc%3Fd%23e"
        );
        assert_eq!(task_path("..", "/skip"), "/v1/tasks/%2E%2E/skip");
        assert_eq!(task_path("\u{e9}", ""), "/v1/tasks/%C3%A9");
    }

    #[test]
    fn a_snapshot_copy_is_a_progress_bar_with_its_rate_and_time_left() {
        let running = json!({ "collection": "default.c", "rows_copied": 4000, "source_rows": 10000,
                              "done": false, "rows_per_second": 1234.4, "seconds_left": 4.9 });
        assert_eq!(
            copy_progress(&running),
            "default.c [########------------]  40%  4000/10000 rows  1234 rows/s  5 s left"
        );
        let done =
            json!({ "collection": "db.d", "rows_copied": 7, "source_rows": 5, "done": true });
        assert_eq!(
            copy_progress(&done),
            "db.d [####################] 100%  7/5 rows  copied"
        );
        assert!(!copy_done(&json!({ "snapshot": [running, done] })));
        assert!(copy_done(&json!({ "task_id": "no copy" })));
    }

    #[test]
    fn a_task_list_is_a_table_with_aligned_columns() {
        let reply = json!({ "tasks": [
            { "task_id": "a1", "state": "Running", "milvus_connect_param": { "uri": "http://t:19530" },
              "collection_infos": [{ "name": "c1" }, { "name": "c2" }], "reason": "" },
            { "task_id": "b", "state": "Failed", "milvus_connect_param": { "uri": "http://t:19530" },
              "collection_infos": [{ "name": "*" }], "reason": "schema mismatch" },
        ]});
        assert_eq!(
            task_table(&reply),
            "TASK  STATE    TARGET          COLLECTIONS  REASON\n\
             a1    Running  http://t:19530  c1,c2\n\
             b     Failed   http://t:19530  *            schema mismatch"
        );
    }

    #[test]
    fn a_task_shows_its_consistency_point_and_rpo() {
        let task = json!({ "task_id": "a1", "state": "Running", "reason": "",
            "consistent_through": { "timestamp": 1, "time": "2024-05-01T12:00:00.123Z",
                                    "rpo_seconds": 2.26 } });
        let shown = task_details(&task);
        assert!(
            shown.contains("consistent   2024-05-01T12:00:00.123Z (rpo 2.3 s)"),
            "{shown}"
        );
        let shown = task_details(&json!({ "task_id": "a1" }));
        assert!(shown.ends_with("consistent"), "none yet: {shown}");
    }

    #[test]
    fn positions_show_channels_and_applied_vchannels() {
        let reply = json!({
            "channels": [{ "channel": "by-dev-rootcoord-dml_0", "next_offset": 12, "tick": 99 }],
            "applied": [{ "vchannel": "by-dev-rootcoord-dml_0_1v0", "ts": 98, "seq": 3 }],
        });
        let shown = positions_table(&reply);
        assert!(
            shown.contains("by-dev-rootcoord-dml_0  12           99"),
            "{shown}"
        );
        assert!(
            shown.contains("by-dev-rootcoord-dml_0_1v0  98          3"),
            "{shown}"
        );
    }
}
