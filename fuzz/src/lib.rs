//! What each fuzz target does with its input, in one place: the targets under `fuzz_targets/`
//! call these functions, and `tests/fuzz_regressions.rs` (in the main crate, through
//! `#[path]`) replays every file of `fuzz/regressions/` through the same ones, so a fixed
//! crash stays fixed. Each function panics exactly when the property it checks is broken.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use milvus_cdc::api::{Access, AllowedHosts};
use milvus_cdc::config::Config;
use milvus_cdc::journal::Journal;
use milvus_cdc::model::{Scope, Secret};
use milvus_cdc::source::ClusterConfig;
use milvus_cdc::source::capture::capture;
use milvus_cdc::source::meta::{
    DEFAULT_DB_ID, Wanted, assemble_wanted, find_named, live_indexes, loaded_replicas, parse_key,
};
use milvus_cdc::source::mq::MqConfig;
use milvus_cdc::task::Supervisor;
use tower::ServiceExt;

/// `decode`: any MQ payload decodes and captures to a value or an error, never a panic.
pub fn decode(data: &[u8]) {
    if let Ok(message) = milvus_cdc::source::decode::decode(data) {
        let _ = capture(
            message,
            "by-dev-rootcoord-dml_0",
            &Scope::all(),
            &mut HashMap::new(),
        );
    }
}

/// `journal_record`: any bytes read back as a journal row decode or are reported corrupt.
pub fn journal_record(data: &[u8]) {
    let _ = milvus_cdc::journal::record::decode(data);
}

const META_ROOT: &str = "by-dev/meta";

/// `etcd_meta`: the input is a list of etcd key/values, each `[kind, id, id, len]` and `len`
/// value bytes; `kind` picks one of the key shapes Milvus writes (ids kept small so values
/// meet under one collection), or takes the value's bytes as the key itself. Every decoder the
/// etcd lookup feeds runs over them: they return metadata or an error, never panic.
pub fn etcd_meta(mut data: &[u8]) {
    let mut kvs: Vec<(String, Vec<u8>)> = Vec::new();
    while let [kind, a, b, len, rest @ ..] = data {
        let len = usize::from(*len).min(rest.len());
        let (value, next) = rest.split_at(len);
        data = next;
        let (a, b) = (a % 4, b % 4);
        let key = match kind % 8 {
            0 => format!("{META_ROOT}/root-coord/database/db-info/{a}"),
            1 => format!("{META_ROOT}/root-coord/database/collection-info/{a}/{b}"),
            2 => format!("{META_ROOT}/root-coord/collection/{b}"),
            3 => format!("{META_ROOT}/root-coord/fields/{b}/{}", 100 + i64::from(a)),
            4 => format!("{META_ROOT}/root-coord/partitions/{b}/{a}"),
            5 => format!("{META_ROOT}/root-coord/database/aliases/{a}/c{b}"),
            6 => format!("{META_ROOT}/field-index/{b}/{a}"),
            // etcd keys reach the decoder as UTF-8 (the reader refuses others).
            _ => {
                let key = String::from_utf8_lossy(value).into_owned();
                let _ = parse_key(META_ROOT, &key);
                key
            }
        };
        if kind % 8 == 6 {
            let _ = live_indexes(std::slice::from_ref(&(key.clone(), value.to_vec())));
            let _ = loaded_replicas(&key, value);
        }
        kvs.push((key, value.to_vec()));
    }
    for wanted in [Wanted::Live, Wanted::LiveOrDropping] {
        if let Ok(assembled) = assemble_wanted(META_ROOT, &kvs, wanted) {
            assert!(
                assembled.databases.iter().any(|d| d.id == DEFAULT_DB_ID),
                "the default database is always there"
            );
        }
    }
    for name in ["c0", "c1"] {
        let _ = find_named(META_ROOT, &kvs, "", name);
    }
}

/// One router for the whole process: a journal in a temporary folder and a source that cannot
/// be reached, driven on one runtime.
struct Server {
    runtime: tokio::runtime::Runtime,
    router: Router,
    /// The same API behind a token and a listed name ([`GUARDED_TOKEN`], [`LISTED_HOST`]).
    guarded: Router,
    // Held so the folder outlives every request.
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a runtime for the harness: {e}"));
        // Named, as the folder outlives the process: libFuzzer exits without running the
        // statics' destructors.
        let dir = tempfile::Builder::new()
            .prefix("milvus-cdc-fuzz-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make the harness's journal folder: {e}"));
        let journal = Journal::open(dir.path())
            .unwrap_or_else(|e| panic!("cannot open the harness's journal: {e}"));
        // The source is a closed loopback port: a create that passes validation fails on
        // connecting to its etcd (a 502) within a millisecond, as a refused connection does.
        let source = format!("127.0.0.1:{}", closed_port());
        let config = Config {
            data_dir: dir.path().to_owned(),
            source: ClusterConfig {
                etcd_endpoints: vec![source.clone()],
                mq: MqConfig::Kafka {
                    brokers: source,
                    tls: false,
                    ca_file: None,
                },
                ..ClusterConfig::default()
            },
            ..Config::default()
        };
        let supervisor = Supervisor::new(Arc::new(journal), config, runtime.handle().clone());
        let router = build_router(supervisor.clone());
        let guarded = milvus_cdc::api::router(
            supervisor,
            Access {
                token: Some(Secret::new(GUARDED_TOKEN)),
                hosts: AllowedHosts::new(LISTEN.into(), &[LISTED_HOST.to_owned()]),
            },
        );
        Server {
            runtime,
            router,
            guarded,
            _dir: dir,
        }
    })
}

/// A loopback port nothing listens on: one the system just gave out and took back.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

/// Where the harness's API says it listens.
const LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 8444);
/// The guarded router's bearer token and its one name besides its address and `localhost`.
const GUARDED_TOKEN: &str = "fuzz-token";
const LISTED_HOST: &str = "cdc.internal";

/// The one place the harness builds the API router.
fn build_router(supervisor: Arc<Supervisor>) -> Router {
    // The requests carry no Host or Origin header, as a script's would: the checks let them by.
    milvus_cdc::api::router(supervisor, Access::local(LISTEN.into()))
}

/// `cdc_body`: any bytes as the body of `POST /cdc`.
pub fn cdc_body(data: &[u8]) {
    request(Method::POST, "/cdc".to_owned(), data);
}

/// `rest_body`: the first byte picks the call; for `POST /v1/tasks` the rest is the body, for
/// the others the task id (percent-encoded into the path, so any bytes make a valid URI).
pub fn rest_body(data: &[u8]) {
    let Some((op, rest)) = data.split_first() else {
        return;
    };
    if op % 6 == 0 {
        request(Method::POST, "/v1/tasks".to_owned(), rest);
        return;
    }
    // An empty id is another route (`/v1/tasks/`), which does not exist.
    if rest.is_empty() {
        return;
    }
    let id = percent_encode(rest);
    let (method, path) = match op % 6 {
        1 => (Method::GET, format!("/v1/tasks/{id}")),
        2 => (Method::DELETE, format!("/v1/tasks/{id}")),
        3 => (Method::POST, format!("/v1/tasks/{id}/pause")),
        4 => (Method::POST, format!("/v1/tasks/{id}/resume")),
        _ => (Method::GET, format!("/v1/tasks/{id}/positions")),
    };
    request(method, path, &[]);
}

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One reply, read whole.
struct Reply {
    status: StatusCode,
    content_type: String,
    body: axum::body::Bytes,
}

/// Sends one request through `router` on the harness's runtime.
fn send(router: &Router, request: Request<Body>) -> Reply {
    let path = request.uri().path().to_owned();
    server().runtime.block_on(async {
        let response = router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|e| match e {});
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap_or_else(|e| panic!("{path}: the reply's body cannot be read: {e}"));
        Reply {
            status,
            content_type,
            body,
        }
    })
}

/// Sends one JSON request to the unguarded router and checks the reply (see [`check_reply`]).
fn request(method: Method, path: String, body: &[u8]) {
    let request = Request::builder()
        .method(method)
        .uri(&path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap_or_else(|e| panic!("the harness built a bad request for {path:?}: {e}"));
    check_reply(&path, &send(&server().router, request));
}

/// A 2xx or 4xx with a JSON body when it has one, an error as
/// `{"code": <status>, "message": ...}`. A 5xx is only right when the source cannot be reached
/// (502), i.e. after the body passed validation; any other is a server fault on input a client
/// chose.
fn check_reply(path: &str, reply: &Reply) {
    let Reply {
        status,
        content_type,
        body,
    } = reply;
    let status = *status;
    let text = String::from_utf8_lossy(body);
    if status == StatusCode::NO_CONTENT && body.is_empty() {
        return;
    }
    assert!(
        content_type.starts_with("application/json"),
        "{path}: {status} with content type {content_type:?}: {text}"
    );
    let json: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{path}: {status} with a body that is not JSON ({e}): {text}"));
    if status.is_success() {
        return;
    }
    assert!(
        status.is_client_error() || status == StatusCode::BAD_GATEWAY,
        "{path}: {status} for a request the client chose: {text}"
    );
    assert_eq!(
        json["code"].as_u64(),
        Some(u64::from(status.as_u16())),
        "{path}: an error's code is its status: {text}"
    );
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{path}: an error says what is wrong: {text}"
    );
    if status == StatusCode::BAD_GATEWAY {
        assert!(
            text.contains("etcd"),
            "{path}: 502 only when the source's etcd cannot be reached: {text}"
        );
    }
}

/// The task id the skip and verify targets address: no task has it, so a body that passes
/// validation meets a 404 (or verify's 409 of an appliance without the source's API).
const NO_SUCH_TASK: &str = "fuzz-task";

/// `skip_body`: any bytes as the body of `POST /v1/tasks/{id}/skip`. As `rest_body`, and a
/// body that is not JSON is a 400, read before the task is looked up.
pub fn skip_body(data: &[u8]) {
    let path = format!("/v1/tasks/{NO_SUCH_TASK}/skip");
    let reply = json_post(&path, data);
    check_reply(&path, &reply);
    if serde_json::from_slice::<serde_json::Value>(data).is_err() {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: not JSON");
    }
}

/// `verify_body`: any bytes as the body of `POST /v1/tasks/{id}/verify`. As `rest_body`; a
/// body that is neither empty nor a JSON object is a 400.
pub fn verify_body(data: &[u8]) {
    let path = format!("/v1/tasks/{NO_SUCH_TASK}/verify");
    let reply = json_post(&path, data);
    check_reply(&path, &reply);
    let object = matches!(
        serde_json::from_slice::<serde_json::Value>(data),
        Ok(serde_json::Value::Object(_))
    );
    if !object && !data.iter().all(u8::is_ascii_whitespace) {
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: not an object"
        );
    }
}

fn json_post(path: &str, body: &[u8]) -> Reply {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .unwrap_or_else(|e| panic!("the harness built a bad request for {path:?}: {e}"));
    send(&server().router, request)
}

mod columns;
mod guard;
mod source;

pub use columns::column_merge;
pub use guard::api_headers;
pub use source::{access_key, meta_watch, mq_position};
