"""Several appliances, one etcd: a task is owned by one member of the group through an etcd
lease and carried on by another from its checkpoint when its owner is lost, with nothing
doubled and nothing skipped on the target."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pymilvus import DataType, FieldSchema, MilvusException

from cdc import CdcServer
from workload import assert_replicated, count, create_collection, ensure_loaded, insert, int64_pk, make_rows, schema, unique_name, wait_until

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))
TTL = 6


def member(tmp_path: Path, env, name: str, prefix: str) -> CdcServer:
    workdir = tmp_path / name
    workdir.mkdir()
    server = CdcServer(workdir, env)
    etcd = env.get("ETCD_ENDPOINTS", "127.0.0.1:2379")
    server.config.write_text(server.config.read_text() + (
        "[group]\n"
        f'etcd_endpoints = ["{etcd}"]\n'
        f'key_prefix = "{prefix}"\n'
        f'name = "{name}"\n'
        f'advertise_url = "{server.url("")}"\n'
        f"lease_ttl_seconds = {TTL}\n"))
    return server


def group_status(server: CdcServer) -> dict:
    return server.request("GET", "/v1/status")[1]["group"]


def owner_seen_by(server: CdcServer, task: str) -> str | None:
    return group_status(server)["owners"].get(task)


class Writer(threading.Thread):
    """An application inserting 50 rows every 100 ms into the source until stopped."""

    def __init__(self, cluster, name: str):
        super().__init__(daemon=True)
        self.cluster, self.name = cluster, name
        self.stopped = threading.Event()
        self.rows = 0

    def run(self) -> None:
        key = 1_000_000
        while not self.stopped.wait(0.1):
            try:
                insert(self.cluster, self.name, make_rows(SMALL, range(key, key + 50), seed=key))
            except MilvusException:
                continue
            key += 50
            self.rows += 50


def test_the_owner_killed_another_member_carries_the_task_on_with_nothing_doubled(
        tmp_path, env, source, target):
    prefix = unique_name("group")
    members = [member(tmp_path, env, f"m{n}", prefix).start() for n in range(3)]
    writer = None
    try:
        wait_until("three members", lambda: [] if len(group_status(members[0])["members"]) == 3
                   else group_status(members[0])["members"], timeout=30, interval=0.2)
        name = unique_name("group")
        status, task = members[0].request("POST", "/v1/tasks", {
            "task_id": "shared", "milvus_connect_param": {"uri": target.uri},
            "collection_infos": [{"name": name}]})
        assert status == 201, task
        create_collection(source, name, SMALL, shards=2)
        insert(source, name, make_rows(SMALL, range(2_000), seed=1))
        writer = Writer(source, name)
        writer.start()
        # The group places the task on one member (maybe another than the one that made it).
        wait_until("a settled owner", lambda: [] if all(owner_seen_by(m, "shared") for m in members) and
                   len({owner_seen_by(m, "shared") for m in members}) == 1 else ["moving"],
                   timeout=60, interval=0.2)
        # Applying (the collection grows faster than it can be compared while written).
        wait_until("rows on the target", lambda: [] if target.has_collection(name) and
                   count(ensure_loaded(target, name)) >= 2_000 else ["not yet"], timeout=120)

        owner_name = owner_seen_by(members[0], "shared")
        owner = next(m for m, n in zip(members, ["m0", "m1", "m2"]) if n == owner_name)
        survivors = [m for m in members if m is not owner]
        time.sleep(2)
        killed_at = time.monotonic()
        owner.kill()
        wait_until("another owner", lambda: [] if owner_seen_by(survivors[0], "shared") not in (None, owner_name)
                   else [owner_seen_by(survivors[0], "shared")], timeout=TTL + 10, interval=0.2)
        took = time.monotonic() - killed_at
        assert took <= TTL + 5, f"taken over after {took:.1f} s"

        time.sleep(3)
        writer.stopped.set()
        writer.join()
        assert writer.rows > 0
        # Row by row, and no key twice (count(*) against the distinct keys).
        assert_replicated(source, target, name, timeout=120)
        new_owner = next(m for m in survivors if group_status(m)["member"] == owner_seen_by(survivors[0], "shared"))
        assert new_owner.metrics()["milvus_cdc_task_takeovers_total"] == 1
        shown = survivors[0].request("GET", "/v1/tasks/shared")[1]
        assert shown["state"] == "Running", shown
    finally:
        if writer:
            writer.stopped.set()
        for m in members:
            m.stop()
