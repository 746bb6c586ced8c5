"""Failback: the old primary comes back holding writes the new one never got. A task from the
new primary to the old one started with `repair` makes the old one equal to the new one by
difference, and saves first every row it replaces or deletes there: exactly those, once, even
with the appliance killed mid-repair. `milvus-cdc reapply` puts them back."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

from pymilvus import DataType, FieldSchema
from pymilvus.grpc_gen import schema_pb2

from cdc import BINARY
from test_clusters import with_backup_cluster
from workload import (all_rows, assert_replicated, create_collection, delete, ensure_loaded, insert, int64_pk,
                      make_rows, schema, upsert, wait_until)

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


def saved_pages(folder: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


def saved_values(pages: list[dict]) -> dict[int, int]:
    """Each saved row's `n`, by key."""
    found = {}
    for page in pages:
        columns = [schema_pb2.FieldData.FromString(base64.b64decode(c)) for c in page["fields_data"]]
        ids = next(c for c in columns if c.field_name == "id").scalars.long_data.data
        ns = next(c for c in columns if c.field_name == "n").scalars.long_data.data
        found.update(zip(ids, ns))
    return found


def test_a_repair_makes_the_old_primary_equal_and_saves_exactly_what_it_replaced_or_deleted(
        tmp_path, env, source, target, names):
    old, new = source, target
    server = with_backup_cluster(tmp_path, env)
    try:
        name = names("failback")
        status, task = server.request("POST", "/v1/tasks", {
            "task_id": "forth", "target_cluster": "backup", "collection_infos": [{"name": name}]})
        assert status == 201, task
        create_collection(old, name, SMALL, shards=2)
        insert(old, name, make_rows(SMALL, range(1_000), seed=1))
        assert_replicated(old, new, name)
        status, _ = server.request("POST", "/v1/tasks/forth/failover")
        assert status == 200
        wait_until("the failover", lambda: [] if server.request("GET", "/v1/tasks/forth")[1]["state"] == "FailedOver"
                   else ["failing over"], timeout=60, interval=0.3)

        # The old primary took writes the new one never got; the new one took its own.
        upsert(old, name, make_rows(SMALL, range(0, 50), seed=2))
        delete(old, name, list(range(100, 120)))
        insert(old, name, make_rows(SMALL, range(5_000, 5_100), seed=3))
        upsert(new, name, make_rows(SMALL, range(200, 210), seed=4))
        insert(new, name, make_rows(SMALL, range(9_000, 9_050), seed=5))
        before = all_rows(ensure_loaded(old, name))

        # Killed once the repaired page is sent, before its progress is recorded: the page is
        # compared and sent again after the restart.
        server.stop()
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": "snapshot-after-send"})
        back_task = {"task_id": "back", "source_cluster": "backup", "target_cluster": "source",
                     "collection_infos": [{"name": name}], "start_position": "repair"}
        status, back = server.request("POST", "/v1/tasks", back_task)
        assert status == 201, back
        assert server.wait_exit(120) != 0, "the appliance was to crash after sending the page"
        server.start()
        # Repeated after the crash, the create answers the task as it is.
        status, again = server.request("POST", "/v1/tasks", back_task)
        assert status == 200 and again["task_id"] == "back", again
        assert_replicated(new, old, name, timeout=180)

        pages = saved_pages(server.workdir / "data" / "repair" / "back")
        replaced = [k for page in pages for k in page["replaced"]]
        deleted = [k for page in pages for k in page["deleted"]]
        assert sorted(replaced) == list(range(0, 50)) + list(range(200, 210)), replaced
        assert sorted(deleted) == list(range(5_000, 5_100)), deleted
        values = saved_values(pages)
        assert values == {k: before[k]["n"] for k in replaced + deleted}, "saved as the old primary had them"

        # Writes on the new primary keep flowing to the old one.
        insert(new, name, make_rows(SMALL, range(20_000, 20_100), seed=6))
        assert_replicated(new, old, name)

        # Put back, the old primary's rows are as they were before the repair.
        assert server.request("POST", "/v1/tasks/back/pause")[0] == 200
        folder = server.workdir / "data" / "repair" / "back"
        done = subprocess.run([str(BINARY), "reapply", "--dir", str(folder), "--uri", old.uri],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "160 rows put back" in done.stdout, done.stdout
        after = all_rows(ensure_loaded(old, name))
        assert all(after[k]["n"] == before[k]["n"] for k in replaced + deleted)
    finally:
        server.stop()
