"""Task management over HTTP, against the real appliance and testbed: the reference CDC's
`POST /cdc` request types and the REST endpoints beside them, and pausing a task under load."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
from pymilvus import DataType, FieldSchema

from cdc import BINARY, ROOT, CdcServer, free_port
from workload import (assert_replicated, create_collection, drop_database, insert, int64_pk, make_rows,
                      replicated_database, schema, unique_name, wait_until)

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


@pytest.fixture
def collection(source, target):
    name = unique_name("api")
    yield name
    for cluster in (source, target):
        cluster.drop_collection(name)


def create_body(target_uri: str, **extra) -> dict:
    return {"milvus_connect_param": {"uri": target_uri, "token": "root:Milvus"},
            "collection_infos": [{"name": "*"}], **extra}


def test_rest_task_lifecycle(server, target):
    status, task = server.request("POST", "/v1/tasks", create_body(target.uri, task_id="rest-1"))
    assert status == 201, task
    assert task == {"task_id": "rest-1", "milvus_connect_param": {"uri": target.uri, "token": ""},
                    "collection_infos": [{"name": "*"}], "state": "Running", "reason": ""}
    assert server.request("GET", "/v1/tasks") == (200, {"tasks": [task]})
    assert server.request("GET", "/v1/tasks/rest-1") == (200, task)

    status, positions = server.request("GET", "/v1/tasks/rest-1/positions")
    assert status == 200
    channels = {p["channel"] for p in positions["channels"]}
    # The DML channels, and the topic of index, load, flush and database operations.
    assert channels and all(c.startswith("by-dev-rootcoord-dml_") or c == "by-dev-replicate-msg"
                            for c in channels), positions
    assert all(p["next_offset"] >= 0 for p in positions["channels"])

    assert server.request("POST", "/v1/tasks/rest-1/pause") == (200, {**task, "state": "Paused"})
    assert server.request("POST", "/v1/tasks/rest-1/pause") == (200, {**task, "state": "Paused"})
    assert server.request("POST", "/v1/tasks/rest-1/resume") == (200, task)
    assert server.request("DELETE", "/v1/tasks/rest-1") == (204, None)
    assert server.request("GET", "/v1/tasks/rest-1") == (404, {"code": 404, "message": "task rest-1 not found"})


def test_rest_errors_name_what_is_wrong(server, target):
    assert server.request("POST", "/v1/tasks/nope/pause") == (404, {"code": 404, "message": "task nope not found"})
    assert server.request("POST", "/v1/tasks", raw=b"{nope") == (
        400, {"code": 400, "message": "invalid request body: key must be a string at line 1 column 2"})
    status, reply = server.request("POST", "/v1/tasks", {"milvus_connect_param": {"uri": target.uri}})
    assert (status, reply) == (400, {"code": 400, "message":
                                     'collection_infos or db_collections must name at least one collection or "*"'})
    status, reply = server.request("POST", "/v1/tasks", {**create_body(target.uri), "collection_infos": "*"})
    assert (status, reply) == (400, {"code": 400, "message":
                                     'invalid body.collection_infos: invalid type: string "*", expected a sequence'})
    status, reply = server.request("POST", "/v1/tasks", {**create_body("ftp://x")})
    assert (status, reply) == (400, {"code": 400, "message": 'milvus_connect_param: invalid target uri "ftp://x": '
                                                             "expected http://host:port or https://host:port"})
    status, reply = server.request("POST", "/v1/tasks", create_body(target.uri, task_id="a b"))
    assert (status, reply) == (400, {"code": 400, "message":
                                     "task_id \"a b\" holds ' ': a task id is 1 to 128 letters, digits, '.', '_' or '-'"})
    status, first = server.request("POST", "/v1/tasks", create_body(target.uri, task_id="twice"))
    assert status == 201
    # A repeated create is answered with the existing task; another spec under that id is refused.
    assert server.request("POST", "/v1/tasks", create_body(target.uri, task_id="twice")) == (200, first)
    assert server.post("create", create_body(target.uri, task_id="twice")) == (
        200, {"code": 200, "data": {"task_id": "twice"}})
    other = create_body(target.uri, task_id="twice", collection_infos=[{"name": "other"}])
    assert server.request("POST", "/v1/tasks", other) == (
        409, {"code": 409, "message": "task twice already exists with another target, collections or start"})
    # A second task writing the same collections to the same target would store their rows twice.
    overlapping = create_body(target.uri, task_id="again", collection_infos=[{"name": "other"}])
    assert server.request("POST", "/v1/tasks", overlapping) == (409, {"code": 409, "message":
        f"task twice already replicates some of these collections to {target.uri}: the target would get their "
        "rows twice. Narrow the collections, or delete task twice first"})


def test_cdc_pause_resume_and_position(server, target):
    status, reply = server.post("create", create_body(target.uri, task_id="cdc-1"))
    assert (status, reply) == (200, {"code": 200, "data": {"task_id": "cdc-1"}})
    assert server.post("pause", {"task_id": "cdc-1"}) == (200, {"code": 200, "data": {}})
    assert server.post("get", {"task_id": "cdc-1"})[1]["data"]["task"]["state"] == "Paused"
    assert server.post("resume", {"task_id": "cdc-1"}) == (200, {"code": 200, "data": {}})
    assert server.post("get", {"task_id": "cdc-1"})[1]["data"]["task"]["state"] == "Running"
    status, reply = server.post("position", {"task_id": "cdc-1"})
    assert status == 200 and reply["data"]["positions"]["channels"], reply
    assert server.post("pause", {"task_id": "gone"}) == (404, {"code": 404, "message": "task gone not found"})
    status, reply = server.post("pause", {})
    assert (status, reply) == (400, {"code": 400, "message": "invalid request_data: missing field `task_id`"})


@pytest.mark.parametrize("request_type", ["delete", "pause", "resume", "get", "position"])
def test_cdc_on_an_unknown_task_is_a_404(server, request_type):
    assert server.post(request_type, {"task_id": "nope"}) == (404, {"code": 404, "message": "task nope not found"})


@pytest.mark.parametrize("body, message", [
    (b"{nope", "invalid request body: key must be a string at line 1 column 2"),
    (b'{"request_data": {}}', "invalid request body: missing field `request_type`"),
    (b'{"request_type": "frobnicate"}', "invalid request_type: unknown variant `frobnicate`, expected one of "
                                        "`create`, `delete`, `pause`, `resume`, `get`, `list`, `position`"),
    (b'{"request_type": "get", "request_data": {"task_id": 5}}',
     "invalid request_data.task_id: invalid type: integer `5`, expected a string"),
    (b'{"request_type": "create", "request_data": {"collection_infos": [{"name": "*"}]}}',
     "milvus_connect_param (or target_cluster) must be given"),
])
def test_cdc_errors_name_what_is_wrong(server, body, message):
    assert server.post("", raw=body) == (400, {"code": 400, "message": message})


def test_cdc_list_needs_no_request_data(server):
    assert server.post("", raw=b'{"request_type": "list"}') == (200, {"code": 200, "data": {"tasks": []}})


def rows_applied(server: CdcServer, task: str) -> float:
    return server.metrics().get(f'milvus_cdc_task_rows_applied_total{{task="{task}"}}', 0)


def test_a_task_paused_under_load_resumes_without_loss(server, tmp_path, env, source, target, collection):
    task = server.create_task(target.uri, collections=(collection,))
    # A witness: a second appliance replicating the same collection into a database of its own,
    # never paused. Once it has every row, the paused task has had every chance to apply them.
    witness_db = unique_name("witness")
    (tmp_path / "witness").mkdir()
    witness = CdcServer(tmp_path / "witness", env).start()
    try:
        status, reply = witness.post("create", {
            "milvus_connect_param": {"uri": target.uri}, "collection_infos": [{"name": collection}],
            "name_mapping": [{"source_db": "default", "target_db": witness_db}]})
        assert status == 200, reply
        create_collection(source, collection, SMALL, shards=2)
        writer = threading.Thread(target=insert, args=(source, collection, make_rows(SMALL, range(20_000), seed=3)),
                                  kwargs={"batch": 500})
        writer.start()
        wait_until("rows applied while the writer runs", lambda: [] if rows_applied(server, task) > 0 else ["none"],
                   timeout=60, interval=0.2)
        assert writer.is_alive(), "the load ended before the pause"
        assert server.request("POST", f"/v1/tasks/{task}/pause")[1]["state"] == "Paused"
        applied = rows_applied(server, task)
        writer.join()
        insert(source, collection, make_rows(SMALL, range(20_000, 25_000), seed=4), batch=1_000)
        assert_replicated(source, replicated_database(target, witness_db), collection, timeout=120)
        assert rows_applied(server, task) == applied, "a paused task applied rows"
        assert server.request("POST", f"/v1/tasks/{task}/resume")[1]["state"] == "Running"
        assert_replicated(source, target, collection, timeout=120)
    finally:
        witness.stop()
        drop_database((target,), witness_db)


def test_with_a_token_every_call_but_health_needs_it(tmp_path, env):
    server = CdcServer(tmp_path, env, extra_env={"MILVUS_CDC_API_TOKEN": "s3cret"}).start()
    try:
        assert server.request("GET", "/v1/tasks") == (200, {"tasks": []})
        assert server.post("list")[0] == 200
        unauthorized = (401, {"code": 401, "message": "missing or wrong bearer token (Authorization: Bearer <token>)"})
        server.token = "wrong"
        assert server.request("GET", "/v1/tasks") == unauthorized
        server.token = None
        assert server.post("list") == unauthorized
    finally:
        server.stop()


def test_an_api_open_to_other_hosts_without_a_token_is_refused(tmp_path):
    config = tmp_path / "open.toml"
    config.write_text(f'listen = "0.0.0.0:{free_port()}"\ndata_dir = "{tmp_path / "data"}"\n')
    done = subprocess.run([str(BINARY), "serve", "--config", str(config)], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode != 0
    assert "has no token: set [api] token" in done.stderr, done.stderr


def test_the_task_command_manages_tasks_from_a_shell(server, target):
    def cli(*args):
        return subprocess.run([str(BINARY), "task", "--server", f"http://127.0.0.1:{server.port}", *args],
                              capture_output=True, text=True, timeout=60)

    created = cli("create", "--target-uri", target.uri, "--task-id", "cli-1", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["state"] == "Running"
    listed = cli("list").stdout.splitlines()
    assert listed[0].split() == ["TASK", "STATE", "TARGET", "COLLECTIONS", "REASON"]
    assert listed[1].split() == ["cli-1", "Running", target.uri, "*"]
    assert "state        Paused" in cli("pause", "cli-1").stdout
    positions = cli("positions", "cli-1").stdout
    assert positions.startswith("CHANNEL") and "by-dev-rootcoord-dml_0" in positions, positions
    missing = cli("get", "nope")
    assert missing.returncode == 1 and missing.stderr.strip() == "milvus-cdc: task nope not found (HTTP 404)"
    # Options go after the subcommand too, as people type them.
    after = subprocess.run([str(BINARY), "task", "list", "--server", f"http://127.0.0.1:{server.port}", "--json"],
                           capture_output=True, text=True, timeout=60)
    assert after.returncode == 0 and json.loads(after.stdout)["tasks"][0]["task_id"] == "cli-1", after.stderr
    assert cli("delete", "cli-1").stdout.strip() == "deleted cli-1"
    assert cli("list").stdout.strip() == "TASK  STATE  TARGET  COLLECTIONS  REASON"


def apply_lag(server: CdcServer, task: str) -> float:
    """The task's largest apply lag over its vchannels, from /metrics (infinite before the task
    has read anything)."""
    lags = [v for k, v in server.metrics().items() if k.startswith(f'milvus_cdc_lag_seconds{{task="{task}"')]
    return max(lags, default=float("inf"))


def wait_lag_below(server: CdcServer, task: str, seconds: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while (lag := apply_lag(server, task)) >= seconds:
        assert time.monotonic() < deadline, f"lag still {lag:.1f}s after {timeout:.0f}s"
        time.sleep(0.5)
    return lag


def test_lag_rises_while_the_target_is_stopped_and_falls_when_it_is_back(server, source, target, collection):
    task = server.create_task(target.uri, collections=(collection,))
    create_collection(source, collection, SMALL, shards=2)
    insert(source, collection, make_rows(SMALL, range(1_000), seed=5), batch=1_000)
    wait_lag_below(server, task, 2.0, timeout=60)
    # SIGSTOP freezes the target Milvus: calls to it hang, as with a network partition. Kept
    # short, so its etcd session does not expire.
    pid = int((ROOT / ".testbed" / "target" / "pid").read_text().split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        insert(source, collection, make_rows(SMALL, range(1_000, 2_000), seed=6), batch=1_000)
        wait_until("the lag to rise while the target is stopped",
                   lambda: [] if apply_lag(server, task) > 5.0 else [apply_lag(server, task)], timeout=20, interval=0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert wait_lag_below(server, task, 2.0, timeout=120) < 2.0
    assert_replicated(source, target, collection, timeout=60)


def test_a_task_retrying_an_unreachable_target_stays_running_and_says_why(server, source, collection):
    task = server.create_task("http://127.0.0.1:9", collections=(collection,))
    create_collection(source, collection, SMALL, shards=1)
    deadline = time.monotonic() + 60
    while True:
        shown = server.request("GET", f"/v1/tasks/{task}")[1]
        if shown["reason"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert shown["state"] == "Running"
    assert shown["reason"].startswith("retrying: target: target unavailable: HasCollection on http://127.0.0.1:9"), shown


def test_a_task_started_at_another_tasks_position_continues_exactly_there(server, source, target, collection):
    """The reference CDC's `positions` at create: channel to base64 MsgPosition, as `position`
    reports it. Starting later would miss the second batch; earlier would store the first twice."""
    first = server.create_task(target.uri, collections=(collection,))
    create_collection(source, collection, SMALL, shards=2)
    insert(source, collection, make_rows(SMALL, range(500), seed=7), batch=250)
    assert_replicated(source, target, collection, timeout=60)
    positions = server.post("position", {"task_id": first})[1]["data"]["positions"]["channels"]
    assert server.post("delete", {"task_id": first}) == (200, {"code": 200, "data": {}})
    insert(source, collection, make_rows(SMALL, range(500, 1_000), seed=8), batch=250)
    status, reply = server.post("create", {
        "milvus_connect_param": {"uri": target.uri}, "collection_infos": [{"name": collection}],
        "positions": {p["channel"]: p["position"] for p in positions}})
    assert status == 200, reply
    assert_replicated(source, target, collection, timeout=60)


def test_a_bad_position_is_refused_with_its_channel(server, target):
    body = {"milvus_connect_param": {"uri": target.uri}, "collection_infos": [{"name": "*"}]}
    status, reply = server.post("create", {**body, "positions": {"by-dev-rootcoord-dml_0": "%%"}})
    assert (status, reply["message"]) == (400, "invalid positions.by-dev-rootcoord-dml_0: position of "
                                               "by-dev-rootcoord-dml_0: not base64: Invalid symbol 37, offset 0.")
    other = server.post("position", {"task_id": "nope"})
    assert other[0] == 404
    status, reply = server.post("create", {**body, "positions": {"nope": "CgRub3BlEggAAAAAAAAAAA=="}})
    assert (status, reply["message"]) == (400, "positions names channel nope, which the source does not have")


def test_a_collection_created_while_a_task_takes_its_start_positions_is_replicated(tmp_path, env, source, target,
                                                                                   collection):
    """The task lists the source's collections, then takes each channel's position. A collection
    created in between is not in that list, and its CreateCollection messages lie before the
    positions: the task must still create it on the target, and replicate what follows."""
    server = CdcServer(tmp_path, env, extra_env={"MILVUS_CDC_DELAY_AT": "task-positions:4000"}).start()
    try:
        created: list = []
        create = lambda: created.append(server.create_task(target.uri, collections=(collection,)))  # noqa: E731
        starting = threading.Thread(target=create)
        starting.start()
        waiting = lambda: "waiting" in server.log.read_text() and "at task-positions" in server.log.read_text()  # noqa: E731
        wait_until("the task listed the collections and waits to take its positions",
                   lambda: [] if waiting() else ["not yet"], timeout=30, interval=0.1)
        create_collection(source, collection, SMALL, shards=2)
        starting.join()
        assert created, "the task was not created"
        insert(source, collection, make_rows(SMALL, range(1_000), seed=9), batch=500)
        assert_replicated(source, target, collection, timeout=60)
    finally:
        server.stop()


def test_an_unknown_route_or_method_gets_the_json_error_body(server):
    assert server.request("GET", "/v1/nothing") == (404, {"code": 404, "message": "no such route: /v1/nothing"})
    assert server.request("PUT", "/v1/tasks") == (405, {"code": 405, "message": "/v1/tasks does not take PUT"})
