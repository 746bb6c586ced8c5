"""`milvus-cdc verify --task ID` (and `POST /v1/tasks/{id}/verify`): compares every collection of a
task's scope on the source and the target, row by row, and answers like `diff`: 0 when equal, 1
when it finds a difference, naming the keys."""

import json
import subprocess

from pymilvus import DataType, FieldSchema

from cdc import BINARY, CdcServer
from test_data_types import SCALARS
from workload import (assert_replicated, create_collection, delete, ensure_loaded, insert, make_rows, schema,
                      upsert, varchar_pk)

BITS = schema(varchar_pk(), FieldSchema("bits", DataType.BINARY_VECTOR, dim=64), FieldSchema("n", DataType.INT32))


def verify(server: CdcServer, task: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), "verify", "--task", task, "--server", f"http://127.0.0.1:{server.port}",
                           "--settle-seconds", "10", *args], capture_output=True, text=True, timeout=600)


def test_verify_finds_equality_then_each_row_changed_behind_the_appliances_back(source, target, names, server):
    typed, keyed = names("verify_types"), names("verify_bits")
    task = server.create_task(target.uri, collections=(typed, keyed))
    create_collection(source, typed, SCALARS, shards=2)
    # More rows than a page (2,000), written in several segments, some deleted and some upserted.
    for start in range(0, 5_000, 2_500):
        insert(source, typed, make_rows(SCALARS, range(start, start + 2_500), seed=start))
        source.collection(typed).flush()
    delete(source, typed, list(range(0, 5_000, 7)))
    upsert(source, typed, make_rows(SCALARS, range(3, 5_000, 11), seed=99))
    create_collection(source, keyed, BITS, shards=1)
    source.collection(keyed).create_partition("late")
    insert(source, keyed, make_rows(BITS, [f"k{i}" for i in range(300)], seed=5))
    insert(source, keyed, make_rows(BITS, [f"late-{i}" for i in range(40)], seed=6), partition="late")
    for name in (typed, keyed):
        ensure_loaded(source, name)
        assert_replicated(source, target, name)

    same = verify(server, task, "--json")
    assert same.returncode == 0, same.stdout + same.stderr
    report = json.loads(same.stdout)
    assert report["equal"] and report["complete"], report
    rows = {c["source"].split(".")[-1]: c for c in report["collections"]}
    expected = len(set(range(5_000)) - set(range(0, 5_000, 7)) | set(range(3, 5_000, 11)))
    assert rows[typed]["rows_compared"] == expected
    assert rows[keyed]["rows_compared"] == 340
    partitions = {p["partition"]: (p["source_rows"], p["target_rows"]) for p in rows[keyed]["partitions"]}
    assert partitions == {"_default": (300, 300), "late": (40, 40)}, partitions
    assert report["consistent_through"]["timestamp"] > 0

    # Behind the appliance's back: a row deleted, a row changed, a row added on the target.
    coll = ensure_loaded(target, typed)
    coll.delete("id in [1]")
    changed = make_rows(SCALARS, [2], seed=12345)
    coll.upsert(changed)
    coll.insert(make_rows(SCALARS, [9_999_999], seed=1))
    ensure_loaded(target, keyed).delete('pk in ["k7"]')

    found = verify(server, task)
    assert found.returncode == 1, found.stdout + found.stderr
    lines = found.stdout.splitlines()
    assert any(f"{typed} -> default.{typed}: DIFFERENT: 1 missing, 1 extra, 1 different" in line
               for line in lines), found.stdout
    assert "  missing: 1" in lines and "  extra: 9999999" in lines and "  different: 2" in lines, found.stdout
    assert "  missing: k7" in lines, found.stdout

    status, reply = server.request("POST", f"/v1/tasks/{task}/verify", {"first": 0, "settle_seconds": 1})
    assert status == 200 and not reply["equal"], reply
    differing = {c["source"].split(".")[-1]: (c["missing"], c["extra"], c["different"]) for c in reply["collections"]}
    assert differing[typed] == ({"count": 1, "first": []}, {"count": 1, "first": []}, {"count": 1, "first": []})


def test_verify_says_what_it_cannot_do(tmp_path, env, target):
    server = CdcServer(tmp_path, env, source_api=False).start()
    try:
        assert server.request("POST", "/v1/tasks/nope/verify") == (404, {"code": 404, "message": "task nope not found"})
        task = server.create_task(target.uri, collections=("verify_absent",))
        assert server.request("POST", f"/v1/tasks/{task}/verify", {"first": 10001}) == (
            400, {"code": 400, "message": "invalid body.first: at most 10000"})
        # Without the source's API no row can be read: said, not guessed.
        assert server.request("POST", f"/v1/tasks/{task}/verify") == (409, {"code": 409, "message": (
            "snapshot copies and verify read rows through the source's Milvus API: set [source] milvus_uri in the appliance's config")})
        run = verify(server, task)
        assert run.returncode == 2 and "milvus_uri" in run.stderr, run.stdout + run.stderr
    finally:
        server.stop()
