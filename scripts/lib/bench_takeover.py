"""Part 5 of scripts/bench: a task's write outage on a takeover in a group of three appliances.

An application inserts 100 rows every 100 ms into the source; the task's owner is SIGKILLed; the
outage is the time from the kill to the first row written after it being visible on the target
(so it includes the usual replication lag). The killed member comes back with an empty data
directory before the next round. Median of `rounds`."""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from pathlib import Path

from pymilvus import MilvusException

from cdc import CdcServer
from test_group import group_view, member
from workload import Cluster, create_collection, ensure_loaded, insert, make_rows, wait_until


class Application(threading.Thread):
    def __init__(self, cluster: Cluster, name: str, schema):
        super().__init__(daemon=True)
        self.cluster, self.name, self.schema = cluster, name, schema
        self.stopped = threading.Event()
        self.written: list[tuple[float, int]] = []  # (when the insert returned, its last key)

    def run(self) -> None:
        key = 0
        while not self.stopped.wait(0.1):
            try:
                insert(self.cluster, self.name, make_rows(self.schema, range(key, key + 100), seed=key))
            except MilvusException:
                continue
            key += 100
            self.written.append((time.monotonic(), key - 1))

    def first_after(self, moment: float, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [k for t, k in self.written if t > moment]
            if later:
                return later[0]
            time.sleep(0.05)
        raise TimeoutError("the application wrote nothing after the kill")


def takeover_outage(source: Cluster, target: Cluster, e: dict, work: Path, schema, visible,
                    rounds: int, ttl: int = 10) -> dict:
    prefix = f"bench_group_{int(time.time())}"
    work.mkdir(parents=True, exist_ok=True)
    names = ["a", "b", "c"]
    members: dict[str, CdcServer] = {}
    for n in names:
        server = member(work, e, n, prefix)
        server.config.write_text(server.config.read_text().replace("lease_ttl_seconds = 6", f"lease_ttl_seconds = {ttl}"))
        members[n] = server.start()
    name = prefix
    create_collection(source, name, schema, shards=2, consistency_level="Bounded")
    app = Application(source, name, schema)
    outages = []

    def seen(pk: int) -> bool:
        # Until the target has created and loaded the collection, a query is refused.
        try:
            return visible(target, name, pk)
        except MilvusException:
            return False

    try:
        status, reply = members["a"].request("POST", "/v1/tasks", {
            "task_id": "bench", "milvus_connect_param": {"uri": e["TARGET_MILVUS_URI"]},
            "collection_infos": [{"name": name}]})
        assert status == 201, reply
        wait_until("the collection on the target", lambda: [] if target.has_collection(name) else ["not yet"],
                   timeout=60, interval=0.1)
        ensure_loaded(target, name)
        app.start()
        for _ in range(rounds):
            def owner() -> str | None:
                seen = {group_view(m)["owners"].get("bench") for m in members.values()}
                return seen.pop() if len(seen) == 1 else None
            wait_until("a settled owner", lambda: [] if owner() else ["moving"], timeout=120, interval=0.2)
            # Rows flowing before the kill.
            steady = app.first_after(time.monotonic())
            wait_until("rows applying", lambda: [] if seen(steady) else ["not yet"], timeout=120, interval=0.05)
            lost = members[owner()]
            killed = time.monotonic()
            lost.kill()
            first = app.first_after(killed)
            while not seen(first):
                if time.monotonic() - killed > 120:
                    raise TimeoutError(f"row {first} not on the target 120 s after the kill")
                time.sleep(0.05)
            outages.append(time.monotonic() - killed)
            print(f"   takeover {len(outages)}: rows applying again {outages[-1]:.1f} s after the kill")
            shutil.rmtree(lost.workdir / "data")
            lost.start()
    finally:
        app.stopped.set()
        for m in members.values():
            m.stop()
        source.drop_collection(name)
        target.drop_collection(name)
    return {"takeover_outage_median_s": statistics.median(outages), "takeover_outage_max_s": max(outages),
            "takeover_lease_ttl_s": float(ttl), "takeover_rounds": len(outages)}
