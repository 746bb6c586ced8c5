"""Bulk insert on the source: Milvus 2.3 writes an import's rows into segments with no message
on the queue. A task sees the import complete in the source's etcd and copies the collection
again (every page an upsert, the collection's changes held and replayed after); until the rows
are on the target its consistency point stays below the import, and the task's snapshot list
says why. The target ends equal to the source row by row, with rows inserted, upserted and
deleted around the import, also when the appliance is killed during the copy."""

import json
import random
import time

from pymilvus import DataType, FieldSchema, utility

from cdc import CdcServer
from workload import (assert_replicated, create_collection, delete, ensure_loaded, insert, int64_pk, make_rows,
                      schema, upsert, wait_until)

ROWS = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8),
              FieldSchema("title", DataType.VARCHAR, max_length=32), FieldSchema("n", DataType.INT64))
IMPORTED = range(1_000, 1_500)


def import_file(directory, keys) -> str:
    """A row-based JSON file of `keys`, at an absolute path: the source's local storage reads
    the path as given."""
    rng = random.Random(keys[0])
    rows = [{"id": k, "vec": [rng.random() for _ in range(8)], "title": f"imported-{k}", "n": k * 3}
            for k in keys]
    path = directory / f"import-{keys[0]}.json"
    path.write_text(json.dumps({"rows": rows}))
    return str(path.resolve())


def bulk_insert(source, name: str, path: str) -> None:
    """Imports `path` into `name` on the source and waits until the source says it completed."""
    job = utility.do_bulk_insert(collection_name=name, files=[path], using=source.name)

    def completed() -> list:
        state = utility.get_bulk_insert_state(job, using=source.name)
        assert state.state_name != "Failed", state
        return [] if state.state_name == "Completed" else [state]

    wait_until(f"bulk insert {job} completed", completed, timeout=120, interval=0.2)


def a_collection_with_rows(source, target, server, name: str) -> str:
    task = server.create_task(target.uri, collections=(name,))
    create_collection(source, name, ROWS, shards=2)
    insert(source, name, make_rows(ROWS, range(10), seed=1))
    ensure_loaded(source, name)
    assert_replicated(source, target, name, timeout=120)
    # Around the import: rows inserted, upserted and deleted before it.
    insert(source, name, make_rows(ROWS, range(10, 20), seed=2))
    upsert(source, name, make_rows(ROWS, range(3, 6), seed=3))
    delete(source, name, [0, 1, 2])
    return task


def changes_after_the_import(source, name: str) -> None:
    delete(source, name, list(range(1_000, 1_010)) + [10, 11])
    upsert(source, name, make_rows(ROWS, list(range(1_010, 1_020)) + [12], seed=4))
    insert(source, name, make_rows(ROWS, range(20, 30), seed=5))


def copy_of(server, task: str, name: str) -> dict | None:
    status, view = server.request("GET", f"/v1/tasks/{task}")
    assert status == 200, view
    return next((c for c in view.get("snapshot", []) if c["collection"] == f"default.{name}"), None)


def test_a_bulk_insert_on_the_source_reaches_the_target_and_holds_the_consistency_point_until_then(
        source, target, tmp_path, env, names):
    name = names("bulk")
    # Each page of the copy waits 3 s after it is sent: the copy is seen running.
    server = CdcServer(tmp_path, env, extra_env={"MILVUS_CDC_DELAY_AT": "snapshot-page:3000"}).start()
    try:
        task = a_collection_with_rows(source, target, server, name)
        bulk_insert(source, name, import_file(tmp_path, IMPORTED))
        completed_ms = time.time() * 1000
        changes_after_the_import(source, name)
        on_target = target.collection(name)

        def copying_and_held() -> list:
            copy = copy_of(server, task, name)
            if copy is None or copy["done"]:
                return [f"no copy running: {copy}"]
            assert "bulk insert" in copy.get("reason", ""), copy
            return []

        wait_until("the task shows the copy and its reason", copying_and_held, timeout=30, interval=0.2)

        # Whenever the point is past the import, the target holds the imported rows.
        def point_past_import_only_with_its_rows() -> list:
            _, view = server.request("GET", f"/v1/tasks/{task}")
            point = view.get("consistent_through")
            if point is None or (point["timestamp"] >> 18) < completed_ms:
                return [f"consistent_through {point} not past the import"]
            held = on_target.query(f"id in [{IMPORTED[-1]}]", output_fields=["id"], consistency_level="Strong")
            assert held, f"the point {point} passed the import while its rows are not on the target"
            return []

        wait_until("a consistency point past the import", point_past_import_only_with_its_rows,
                   timeout=120, interval=0.3)
        assert_replicated(source, target, name, timeout=120)
        copy = copy_of(server, task, name)
        assert copy["done"] and "bulk insert" in copy["reason"], copy
    finally:
        server.stop()


def test_a_bulk_insert_copy_killed_midway_resumes_without_losing_or_doubling_a_row(
        source, target, tmp_path, env, names):
    name = names("bulk_kill")
    server = CdcServer(tmp_path, env).start()
    try:
        a_collection_with_rows(source, target, server, name)
        # Killed once the copy's page is on the target and before its progress says so.
        server.stop()
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": "snapshot-after-send"})
        bulk_insert(source, name, import_file(tmp_path, IMPORTED))
        changes_after_the_import(source, name)
        assert server.wait_exit(timeout=60) != 0
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": ""})
        assert_replicated(source, target, name, timeout=120)
    finally:
        server.stop()
