"""Replication core, end to end: the real milvus-cdc between the testbed's source and target."""

import random
import threading
import time

import pytest
from pymilvus import DataType, FieldSchema

from cdc import CdcServer
from workload import (assert_replicated, create_collection, delete, insert, int64_pk, make_rows, schema,
                      upsert, varchar_pk, wait_until)

MAIN = schema(
    int64_pk(),
    FieldSchema("vec", DataType.FLOAT_VECTOR, dim=128),
    FieldSchema("title", DataType.VARCHAR, max_length=64),
    FieldSchema("i32", DataType.INT32),
    FieldSchema("score", DataType.FLOAT),
    FieldSchema("flag", DataType.BOOL),
    FieldSchema("doc", DataType.JSON),
)
BY_NAME = schema(varchar_pk("key"), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=16),
                 FieldSchema("n", DataType.INT64))


@pytest.fixture
def cdc(tmp_path, env, target):
    server = CdcServer(tmp_path, env).start()
    server.task_id = server.create_task(target.uri)
    yield server
    server.stop()


def core_workload(source, main, by_name, rows=50_000):
    create_collection(source, main, MAIN, shards=2)
    insert(source, main, make_rows(MAIN, range(rows), seed=11), batch=5_000)
    delete(source, main, list(range(0, rows, rows // 5_000)))
    upsert(source, main, make_rows(MAIN, range(1, rows, rows // 5_000), seed=12), batch=2_500)
    create_collection(source, by_name, BY_NAME, shards=2)
    insert(source, by_name, make_rows(BY_NAME, [f"k-{i}" for i in range(5_000)], seed=13), batch=2_000)


def test_inserts_deletes_upserts_and_two_collections_replicate(source, target, cdc, names):
    main, by_name = names("core"), names("bykey")
    core_workload(source, main, by_name)
    assert_replicated(source, target, main, timeout=300)
    assert_replicated(source, target, by_name, timeout=120)


def test_a_caught_up_task_is_consistent_through_a_recent_timestamp(source, target, server, names):
    """The consistency point: the task, `/metrics` and the status page's data show a source
    timestamp the target holds everything through, past the last write, seconds old."""
    name = names("consistent")
    task = server.create_task(target.uri, collections=(name,))
    create_collection(source, name, BY_NAME)
    written = source.collection(name).insert(make_rows(BY_NAME, [f"k-{i}" for i in range(1_000)], seed=21))
    assert_replicated(source, target, name, timeout=120)

    def point_past_the_write() -> list:
        status, view = server.request("GET", f"/v1/tasks/{task}")
        assert status == 200, view
        point = view.get("consistent_through")
        if point is None or point["timestamp"] < written.timestamp:
            return [f"consistent_through {point}, the insert is at {written.timestamp}"]
        return []

    wait_until("a consistency point past the insert", point_past_the_write, timeout=60)
    _, view = server.request("GET", f"/v1/tasks/{task}")
    point = view["consistent_through"]
    assert 0 <= point["rpo_seconds"] < 30, point
    ms = point["timestamp"] >> 18
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    assert point["time"] == stamp, point
    _, listed = server.request("GET", "/v1/tasks")
    assert [t.get("consistent_through") is not None for t in listed["tasks"]] == [True], listed

    metrics = server.metrics()
    consistent = metrics[f'milvus_cdc_consistent_timestamp_seconds{{task="{task}"}}']
    rpo = metrics[f'milvus_cdc_rpo_seconds{{task="{task}"}}']
    assert 0 <= rpo < 30, metrics
    assert abs(consistent - time.time()) < 30 and consistent >= (written.timestamp >> 18) / 1000, consistent

    _, status = server.request("GET", "/v1/status")
    [shown] = [t for t in status["tasks"] if t["task_id"] == task]
    assert shown["consistent_through"]["rpo_seconds"] < 30, shown


def test_survives_sigkill_at_random_moments(source, target, tmp_path, env, names):
    """20+ SIGKILLs while the workload runs; the target ends equal, no key stored twice."""
    seed = random.randrange(1 << 30)
    print(f"crash test seed {seed}")
    rng = random.Random(seed)
    server = CdcServer(tmp_path, env).start()
    server.create_task(target.uri)
    main, by_name = names("crash"), names("crashkey")
    writer = threading.Thread(target=core_workload, args=(source, main, by_name))
    writer.start()
    kills = 0
    try:
        while writer.is_alive() or kills < 20:
            time.sleep(rng.uniform(0.2, 2.5))
            server.kill()
            kills += 1
            server.start()
        writer.join()
        assert_replicated(source, target, main, timeout=180)
        assert_replicated(source, target, by_name, timeout=120)
    finally:
        writer.join()
        server.stop()
    assert kills >= 20


def test_a_mid_size_workload_replicates_exactly(source, target, server, names):
    name = names("mid")
    # Scoped to the one collection, so its counters below see nothing else.
    task = server.create_task(target.uri, collections=(name,))
    s = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=128), FieldSchema("doc", DataType.JSON))
    create_collection(source, name, s, shards=2)
    insert(source, name, make_rows(s, range(20_000), seed=1), batch=5_000)
    delete(source, name, list(range(0, 20_000, 10)))
    upsert(source, name, make_rows(s, range(1, 20_000, 10), seed=2), batch=2_500)
    assert_replicated(source, target, name, timeout=120)
    # An upsert reaches the journal as a Delete and an Insert of its keys.
    expected = {("insert", "rows"): 22_000, ("delete", "rows"): 4_000, ("create_collection", "changes"): 1}

    def applied() -> list:
        metrics = server.metrics()
        counted = {(op, unit): metrics.get(f'milvus_cdc_applied_{unit}_total{{task="{task}",op="{op}"}}')
                   for op, unit in expected}
        return [] if counted == expected else [counted]
    wait_until("the applied counters to reach the workload", applied, timeout=10)
    metrics = server.metrics()
    staged = lambda unit, op: metrics.get(f'milvus_cdc_staged_{unit}_total{{task="{task}",op="{op}"}}')
    assert (staged("rows", "insert"), staged("rows", "delete")) == (22_000, 4_000)
    assert staged("changes", "create_collection") == 2, "staged once per shard"
    assert staged("bytes", "insert") > 22_000 * 128 * 4


def test_earliest_copies_a_collection_that_existed_before_the_task(source, target, tmp_path, env, names):
    """`earliest` starts at the collection's own start position in etcd: its rows and deletes
    from before the task arrive, and a collection outside the task's scope does not."""
    before, other = names("before"), names("outside")
    create_collection(source, before, BY_NAME, shards=2)
    create_collection(source, other, BY_NAME, shards=1)
    insert(source, before, make_rows(BY_NAME, [f"b-{i}" for i in range(4_000)], seed=7), batch=1_000)
    insert(source, other, make_rows(BY_NAME, [f"o-{i}" for i in range(100)], seed=8), batch=100)
    delete(source, before, [f"b-{i}" for i in range(0, 4_000, 7)])
    server = CdcServer(tmp_path, env).start()
    try:
        server.create_task(target.uri, collections=(before,), start="earliest")
        insert(source, before, make_rows(BY_NAME, [f"a-{i}" for i in range(500)], seed=9), batch=500)
        assert_replicated(source, target, before, timeout=120)
        assert not target.has_collection(other)
    finally:
        server.stop()


@pytest.mark.parametrize("point", ["apply-after-ack", "stage-before-commit"])
def test_crash_at_an_exact_point_is_recovered(source, target, tmp_path, env, names, point):
    """The process aborts right after the target acknowledged a batch (or right before the reader
    commits), restarts without the failpoint, and the target ends equal with no duplicate."""
    server = CdcServer(tmp_path, env).start(extra_env={"MILVUS_CDC_CRASH_AT": point})
    server.create_task(target.uri)
    name = names("exact")
    create_collection(source, name, BY_NAME, shards=2)
    insert(source, name, make_rows(BY_NAME, [f"x-{i}" for i in range(3_000)], seed=5), batch=1_000)
    assert server.wait_exit(timeout=60) != 0, "the failpoint was not reached"
    server.start(extra_env={"MILVUS_CDC_CRASH_AT": ""})
    try:
        assert_replicated(source, target, name, timeout=120)
    finally:
        server.stop()


def test_a_malformed_request_names_the_field(cdc):
    status, reply = cdc.post("create", {"milvus_connect_param": {}, "collection_infos": [{"name": "*"}]})
    assert status == 400
    assert reply == {"code": 400, "message": "invalid request_data.milvus_connect_param: missing field `uri`"}
    status, reply = cdc.post("", raw=b"{not json")
    assert status == 400 and reply["message"].startswith("invalid request body")
    status, reply = cdc.post("get", {"task_id": "nope"})
    assert (status, reply) == (404, {"code": 404, "message": "task nope not found"})
