"""Control calls as a retrying client sends them: repeated and concurrent, for one task id.
Whatever their interleaving, the task runs once and the target ends equal to the source."""

import json
import random
import threading
import urllib.error
import urllib.request

from pymilvus import DataType, FieldSchema

from cdc import CdcServer
from workload import assert_replicated, create_collection, insert, int64_pk, make_rows, schema

SCHEMA = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


def call(server, method: str, path: str, body: dict | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data, method=method,
                                 headers=server.headers())
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def all_at_once(calls) -> list:
    """Runs every call in its own thread, released together."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(i, fn):
        barrier.wait()
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def workload(source, names, prefix: str) -> list[str]:
    collections = [names(prefix), names(prefix)]
    for i, name in enumerate(collections):
        create_collection(source, name, SCHEMA, shards=2)
        insert(source, name, make_rows(SCHEMA, range(8_000), seed=i), batch=2_000)
    return collections


def test_fifty_concurrent_creates_of_one_id_create_and_run_it_once(source, target, server, names):
    create = {"request_type": "create", "request_data": {
        "task_id": "retried", "milvus_connect_param": {"uri": target.uri, "token": ""},
        "collection_infos": [{"name": "*"}]}}
    statuses = all_at_once([lambda: call(server, "POST", "/cdc", create)] * 50)
    assert statuses == [200] * 50
    assert server.log.read_text().count("task created") == 1
    for name in workload(source, names, "retried"):
        assert_replicated(source, target, name, timeout=180)


def test_creates_racing_pause_resume_and_delete_leave_one_run(source, target, server, names):
    seed = random.randrange(1 << 30)
    print(f"race seed {seed}")
    rng = random.Random(seed)
    body = {"task_id": "raced", "milvus_connect_param": {"uri": target.uri, "token": ""},
            "collection_infos": [{"name": "*"}]}
    actions = {
        "create": lambda: call(server, "POST", "/v1/tasks", body),
        "pause": lambda: call(server, "POST", "/v1/tasks/raced/pause"),
        "resume": lambda: call(server, "POST", "/v1/tasks/raced/resume"),
        "delete": lambda: call(server, "DELETE", "/v1/tasks/raced"),
    }
    for _ in range(3):
        picked = [rng.choice(list(actions)) for _ in range(24)]
        for action, status in zip(picked, all_at_once([actions[a] for a in picked])):
            assert status in (200, 201, 204, 404), (action, status)
    # Whatever the races left: the task exists and runs.
    assert actions["create"]() in (200, 201)
    assert actions["resume"]() == 200
    for name in workload(source, names, "raced"):
        assert_replicated(source, target, name, timeout=180)


def post(server, path: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=json.dumps(body).encode(),
                                 method="POST", headers=server.headers())
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_twenty_concurrent_creates_without_a_task_id_make_one_task_and_the_rest_name_it(
        source, target, server, names):
    # The README's own create, as a client that retries a create it thinks timed out sends it.
    create = {"request_type": "create", "request_data": {
        "milvus_connect_param": {"uri": target.uri, "token": ""},
        "collection_infos": [{"name": "*"}]}}
    replies = all_at_once([lambda: post(server, "/cdc", create)] * 20)
    created = [reply["data"]["task_id"] for status, reply in replies if status == 200]
    assert len(created) == 1, replies
    refused = [reply["message"] for status, reply in replies if status != 200]
    assert [status for status, _ in replies].count(409) == 19, replies
    assert all(f"task {created[0]} already replicates" in message for message in refused), refused
    assert [t["task_id"] for t in server.request("GET", "/v1/tasks")[1]["tasks"]] == created
    for name in workload(source, names, "unnamed"):
        assert_replicated(source, target, name, timeout=180)


def test_a_create_killed_before_it_saved_its_task_leaves_nothing_to_the_next_create_of_its_id(
        source, target, tmp_path, env, names):
    """The process aborts after a create staged its start (the creation of the collection it was
    for among it) and before it saved the task. Started again, a create of the same id for
    another collection replicates that one alone: nothing the abandoned create staged reaches
    the target."""
    abandoned, kept = names("abandoned"), names("kept")
    create_collection(source, abandoned, SCHEMA, shards=2)
    insert(source, abandoned, make_rows(SCHEMA, range(100), seed=7))
    server = CdcServer(tmp_path, env).start(extra_env={"MILVUS_CDC_CRASH_AT": "create-before-save"})
    try:
        body = {"task_id": "reused", "milvus_connect_param": {"uri": target.uri, "token": ""}}
        try:
            post(server, "/v1/tasks", {**body, "collection_infos": [{"name": abandoned}]})
        except OSError:
            pass  # the process aborted while answering
        assert server.wait_exit(timeout=60) != 0, "the failpoint was not reached"
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": ""})
        assert server.request("GET", "/v1/tasks")[1]["tasks"] == []
        status, reply = post(server, "/v1/tasks", {**body, "collection_infos": [{"name": kept}]})
        assert status == 201, reply
        create_collection(source, kept, SCHEMA, shards=2)
        insert(source, kept, make_rows(SCHEMA, range(500), seed=8))
        assert_replicated(source, target, kept, timeout=120)
        assert not target.has_collection(abandoned)
    finally:
        server.stop()
