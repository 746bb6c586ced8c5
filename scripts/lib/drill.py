"""The disaster-recovery drill on the testbed, with an application writing throughout: a
switchover from the source Milvus (A) to the target Milvus (B), writes on B, a failover back to A
with every connection of the appliance to B cut, B's return and repair (A primary, B its
standby), then a switchover to B (the layout before the failover) and one back to A: the original
layout. Each step prints its RPO, the write outage and a row-by-row comparison of the two
clusters.

Run by scripts/drill (not part of CI); the testbed must be up."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from pymilvus import DataType, FieldSchema, MilvusException  # noqa: E402

from cdc import BINARY, CdcServer, free_port  # noqa: E402
from conftest import testbed_env  # noqa: E402
from kafka_relay import KafkaRelay  # noqa: E402
from relay import TcpRelay  # noqa: E402
from workload import (Cluster, all_rows, assert_replicated, create_collection, ensure_loaded, insert,  # noqa: E402
                      int64_pk, make_rows, schema, unique_name, wait_until)

SCHEMA = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


class Application(threading.Thread):
    """Writes 20 rows every 200 ms to whichever cluster is its primary; a refused write (a
    fenced or lost primary) makes it wait until it is pointed elsewhere."""

    def __init__(self, primary: Cluster, name: str):
        super().__init__(daemon=True)
        self.primary, self.name = primary, name
        self.next_key, self.accepted, self.refused = 1_000_000, 0, 0
        self.stopped = threading.Event()
        self.idle = threading.Event()
        self.lock = threading.Lock()

    def point_to(self, cluster: Cluster) -> None:
        with self.lock:
            self.primary = cluster
            self.idle.clear()

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            with self.lock:
                if self.idle.is_set():
                    continue
                keys = list(range(self.next_key, self.next_key + 20))
                try:
                    insert(self.primary, self.name, make_rows(SCHEMA, keys, seed=self.next_key))
                    self.next_key += 20
                    self.accepted += 20
                except MilvusException:
                    self.refused += 1
                    self.idle.set()


def cli(*args: str, server: CdcServer) -> dict:
    run = subprocess.run([str(BINARY), *args, "--server", server.url(""), "--json"], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"milvus-cdc {' '.join(args)} failed: {run.stderr.strip()}")
    return json.loads(run.stdout)


def switch_over(step: str, task: str, reverse: str, app: Application, to: Cluster, server: CdcServer) -> None:
    """Switches `task` over, the application writing to the old primary until it refuses it, and
    points the application at the new one."""
    report = cli("switchover", "--task", task, "--reverse-task-id", reverse, "--timeout", "120", "--verify",
                 server=server)
    app.point_to(to)
    print(f"{step} switchover {report['old_primary']} -> {report['new_primary']}: RPO 0 (fence at "
          f"{report['fence_ts']['time']}, the new primary consistent through "
          f"{report['consistent_through']['time']}, newest write before the fence: "
          f"{(report.get('newest_write') or {}).get('time', 'none')}); write outage "
          f"{report['write_outage_ms'] / 1000:.1f} s; verified {report['verified_equal']}")


def compare(a: Cluster, b: Cluster, name: str) -> str:
    rows_a, rows_b = all_rows(ensure_loaded(a, name)), all_rows(ensure_loaded(b, name))
    only_a = len(set(rows_a) - set(rows_b))
    only_b = len(set(rows_b) - set(rows_a))
    differ = sum(1 for k in set(rows_a) & set(rows_b) if rows_a[k] != rows_b[k])
    if not (only_a or only_b or differ):
        return f"equal, {len(rows_a)} rows"
    return f"{len(rows_a)} rows on source, {len(rows_b)} on target: {only_a} only on source, {only_b} only on target, {differ} differ"


def main() -> int:
    env = testbed_env()
    a = Cluster("source", env["SOURCE_MILVUS_URI"]).connect()
    b = Cluster("target", env["TARGET_MILVUS_URI"]).connect()
    relays = [TcpRelay(free_port(), 2379).start(), KafkaRelay(free_port(), 9092).start(),
              TcpRelay(free_port(), int(env["TARGET_MILVUS_URI"].rsplit(":", 1)[1])).start()]
    etcd_b, kafka_b, api_b = relays
    work = Path(tempfile.mkdtemp(prefix="drill-"))
    target = (
        "[clusters.target]\n"
        f'etcd_endpoints = ["127.0.0.1:{etcd_b.port}"]\n'
        'etcd_root_path = "dr"\nchannel_prefix = "dr"\n'
        f'milvus_uri = "http://127.0.0.1:{api_b.port}"\n'
        "[clusters.target.mq]\n"
        f'type = "kafka"\nbrokers = "127.0.0.1:{kafka_b.port}"\n'
    )
    server = CdcServer(work, env, extra_config=target).start()
    name = unique_name("drill")
    app = Application(a, name)
    print(f"drill: collection {name}; the appliance's log: {server.log}")
    try:
        status, task = server.request("POST", "/v1/tasks", {"task_id": "drill", "target_cluster": "target",
                                                            "collection_infos": [{"name": name}]})
        assert status == 201, task
        create_collection(a, name, SCHEMA, shards=2)
        insert(a, name, make_rows(SCHEMA, range(5_000), seed=1))
        assert_replicated(a, b, name, timeout=120)
        app.start()
        time.sleep(3)

        # 1. Switchover A to B, the application writing to A until A refuses it.
        switch_over("1.", "drill", "drill-reverse", app, to=b, server=server)

        # 2. Writes on B, carried back to A.
        time.sleep(5)
        with app.lock:
            app.idle.set()
        assert_replicated(b, a, name, timeout=120)
        print(f"2. writes on the target: {app.accepted} rows accepted in all; compared: {compare(a, b, name)}")
        app.point_to(b)
        time.sleep(3)

        # 3. B is lost: every connection of the appliance to it cut; failover of the reverse task.
        lost_at = time.time()
        for relay in relays:
            relay.cut()
        app.point_to(a)
        failover = cli("failover", "--task", "drill-reverse", "--timeout", "120", server=server)
        point = failover["consistent_through"]
        rpo = lost_at - (point["timestamp"] >> 18) / 1000
        print(f"3. failover target -> source with the target cut: consistent through {point['time']} "
              f"(RPO {max(rpo, 0):.1f} s before the cut), {failover['held']['changes']} changes held in "
              f"{failover['held']['file']}; the application moved to the source")

        # 4. B returns, holding writes A never got: repaired from A.
        time.sleep(3)
        for relay in relays:
            relay.heal()
        with app.lock:
            app.idle.set()
        before = compare(a, b, name)
        app.point_to(a)
        status, _ = server.request("POST", "/v1/tasks", {
            "task_id": "drill-back", "target_cluster": "target", "collection_infos": [{"name": name}],
            "start_position": "repair"})
        assert status == 201, status
        time.sleep(5)
        with app.lock:
            app.idle.set()
        assert_replicated(a, b, name, timeout=300)
        saved = list((work / "data" / "repair" / "drill-back").glob("*.jsonl"))
        replaced = sum(len(json.loads(p.read_text())["replaced"]) for p in saved)
        deleted = sum(len(json.loads(p.read_text())["deleted"]) for p in saved)
        print(f"4. the target returns ({before}); repaired: {replaced} rows replaced and {deleted} deleted "
              f"there, saved first; compared: {compare(a, b, name)}")

        app.point_to(a)
        time.sleep(3)

        # 5. A later switchover restores the layout before the failover (B primary), and one more
        # the original layout (A primary), each under writes.
        switch_over("5.", "drill-back", "drill-back-reverse", app, to=b, server=server)
        time.sleep(5)
        switch_over("6.", "drill-back-reverse", "drill-home", app, to=a, server=server)
        time.sleep(5)
        with app.lock:
            app.idle.set()
        assert_replicated(a, b, name, timeout=120)
        print(f"   compared: {compare(a, b, name)}")

        roles = {c["name"]: c["role"] for c in server.request("GET", "/v1/status")[1]["clusters"]}
        print(f"7. layout: source {roles['source']}, target {roles['target']}; the application wrote "
              f"{app.accepted} rows, {app.refused} writes refused while it was pointed at a fenced or lost primary")
        return 0 if roles == {"source": "primary", "target": "standby"} else 1
    finally:
        app.stopped.set()
        server.stop()
        for relay in relays:
            relay.stop()
        for cluster in (a, b):
            cluster.drop_collection(name)


if __name__ == "__main__":
    sys.exit(main())
