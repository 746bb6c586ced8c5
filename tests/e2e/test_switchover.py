"""Switchover: a planned move of the writes from the source Milvus to the target Milvus, both
up, while an application keeps writing to the source until the source refuses it.

`milvus-cdc switchover` fences writes on the source (its `forceDeny` quota setting, in its etcd),
waits until the target holds all of it (RPO 0), pauses the task and starts the reverse task,
which then carries writes made on the new primary back to the old one. The appliance is killed
once the task is paused and before the reverse task exists: repeated, the command ends in the
same state."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
import threading

from pymilvus import DataType, FieldSchema, MilvusException

from cdc import BINARY, CdcServer
from test_clusters import with_backup_cluster
from workload import assert_replicated, create_collection, insert, int64_pk, make_rows, schema, wait_until

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))
FENCE_KEY = "by-dev/config/quotaAndLimits/limitWriting/forceDeny"


class Writer(threading.Thread):
    """An application writing batches of 50 rows to the source until the source refuses one."""

    def __init__(self, cluster, name: str):
        super().__init__(daemon=True)
        self.cluster, self.name = cluster, name
        self.accepted: list[int] = []
        self.refusal: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        key = 100_000
        try:
            while not self.done.is_set():
                keys = list(range(key, key + 50))
                try:
                    insert(self.cluster, self.name, make_rows(SMALL, keys, seed=key))
                except MilvusException as err:
                    self.refusal = str(err)
                    return
                self.accepted += keys
                key += 50
        finally:
            self.done.set()


def switchover(server: CdcServer, task: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), "switchover", "--task", task, "--server", server.url(""),
                           "--timeout", "120", "--verify", "--json"], capture_output=True, text=True)


def lift_fence(env) -> None:
    """Whatever happened, the source takes writes again after the test."""
    subprocess.run(["etcdctl", "--endpoints", env.get("ETCD_ENDPOINTS", "127.0.0.1:2379"), "del", FENCE_KEY],
                   env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}, capture_output=True, check=False)


def test_a_switchover_under_writes_loses_nothing_refuses_the_fenced_source_and_reverses(
        tmp_path, env, source, target, names):
    server = with_backup_cluster(tmp_path, env)
    server.stop()
    # Killed once the task is paused, before the reverse task is created.
    server.start(extra_env={"MILVUS_CDC_CRASH_AT": "switchover-after-pause"})
    writer = None
    try:
        name = names("switch")
        status, task = server.request("POST", "/v1/tasks", {
            "task_id": "forth", "target_cluster": "backup", "collection_infos": [{"name": name}]})
        assert status == 201, task
        create_collection(source, name, SMALL, shards=2)
        insert(source, name, make_rows(SMALL, range(1_000), seed=1))
        assert_replicated(source, target, name)

        writer = Writer(source, name)
        writer.start()
        wait_until("the application writing", lambda: [] if len(writer.accepted) >= 200 else ["no rows yet"],
                   timeout=60, interval=0.2)
        crashed = switchover(server, "forth")
        assert crashed.returncode != 0, "the appliance was to crash after pausing the task"
        assert server.wait_exit(30) != 0
        assert writer.done.wait(60), "the fenced source still took writes"
        assert writer.refusal and "deactivated by the administrator" in writer.refusal, writer.refusal

        server.start()
        # Repeated at once, as a retrying client does: both calls answer the one report.
        with ThreadPoolExecutor(2) as pool:
            done, twice = pool.map(lambda _: switchover(server, "forth"), range(2))
        assert done.returncode == 0 and twice.returncode == 0, (done.stderr, twice.stderr)
        report = json.loads(done.stdout)
        assert json.loads(twice.stdout) == report
        assert (report["new_primary"], report["old_primary"], report["reverse_task"]) == (
            "backup", "source", "forth-reverse"), report
        assert report["consistent_through"]["timestamp"] >= report["fence_ts"]["timestamp"], report
        assert report["newest_write"]["timestamp"] <= report["fence_ts"]["timestamp"], report
        assert report["verified_equal"] is True and report["write_outage_ms"] > 0, report
        # Every write the source accepted is on the target, once; the refused one nowhere.
        assert_replicated(source, target, name, timeout=30)
        assert server.request("GET", "/v1/tasks/forth")[1]["state"] == "Paused"
        status, reply = server.request("POST", "/v1/tasks/forth/resume")
        assert status == 409 and "switched over" in reply["message"], reply
        # Its reverse task is what a lost primary fails over now.
        status, reply = server.request("POST", "/v1/tasks/forth/failover")
        assert status == 409 and "fail forth-reverse over" in reply["message"], reply
        assert server.request("GET", "/v1/tasks/forth-reverse")[1]["state"] == "Running"
        status = server.request("GET", "/v1/status")[1]
        assert [(c["name"], c["role"]) for c in status["clusters"]] == [("source", "standby"), ("backup", "primary")]
        assert status["last_switchover"] == {"task": "forth", "report": report}, status
        assert server.metrics()['milvus_cdc_cluster_role{cluster="backup",role="primary"}'] == 1
        # Repeated, it answers the same report.
        again = switchover(server, "forth")
        assert again.returncode == 0 and json.loads(again.stdout) == report, again.stderr

        # The new primary takes writes, and the reverse task carries them to the old one.
        insert(target, name, make_rows(SMALL, range(500_000, 500_300), seed=9))
        assert_replicated(target, source, name)
    finally:
        if writer:
            writer.done.set()
        server.stop()
        lift_fence(env)
