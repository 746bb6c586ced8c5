"""Several appliances, one etcd: a task is owned by one member of the group through an etcd
lease, placed on the member its id hashes highest with (the appliance's xxh3 rendezvous), and
carried on by another from its checkpoint when its owner is lost, with nothing doubled and
nothing skipped on the target. An application writes throughout; the target is compared row by
row, count(*) against the distinct keys, once it stops."""

from __future__ import annotations

import re
import shutil
import threading
import time
from datetime import datetime
from pathlib import Path

import xxhash
from pymilvus import DataType, FieldSchema, MilvusException

from cdc import CdcServer, free_port
from relay import TcpRelay
from workload import (assert_replicated, count, create_collection, ensure_loaded, insert, int64_pk, make_rows,
                      schema, unique_name, wait_until)

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))
TTL = 6


def placed_on(task: str, members: list[str]) -> str:
    """The member the group places `task` on (as `group::placed_on`)."""
    return max(members, key=lambda m: (xxhash.xxh3_64_intdigest(f"{task}\0{m}".encode()), members.index(m)))


def task_placed(on: str, members: list[str], prefix: str) -> str:
    return next(t for t in (f"{prefix}-{n}" for n in range(1000)) if placed_on(t, members) == on)


def member(tmp_path: Path, env, name: str, prefix: str, etcd: str | None = None) -> CdcServer:
    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    server = CdcServer(workdir, env)
    etcd = etcd or env.get("ETCD_ENDPOINTS", "127.0.0.1:2379")
    server.config.write_text(server.config.read_text() + (
        "[group]\n"
        f'etcd_endpoints = ["{etcd}"]\n'
        f'key_prefix = "{prefix}"\n'
        f'name = "{name}"\n'
        f'advertise_url = "{server.url("")}"\n'
        f"lease_ttl_seconds = {TTL}\n"))
    return server


def group_view(server: CdcServer) -> dict:
    return server.request("GET", "/v1/status")[1]["group"]


def all_joined(members: list[CdcServer]) -> None:
    wait_until("every member joined", lambda: [] if len(group_view(members[0])["members"]) == len(members)
               else ["joining"], timeout=30, interval=0.2)


def owner_seen_by(server: CdcServer, task: str) -> str | None:
    return group_view(server)["owners"].get(task)


def wait_owned(servers: list[CdcServer], task: str, by: str, timeout: float) -> float:
    """Seconds until every server sees `task` owned by `by`."""
    began = time.monotonic()
    wait_until(f"{task} owned by {by}", lambda: [s.port for s in servers if owner_seen_by(s, task) != by],
               timeout=timeout, interval=0.2)
    return time.monotonic() - began


def log_time(server: CdcServer, pattern: str) -> datetime:
    """When the first line of the server's log matching `pattern` was written."""
    for line in server.log.read_text(errors="replace").splitlines():
        if re.search(pattern, line):
            return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
    raise AssertionError(f"no line matches {pattern!r} in {server.log}")


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

    def finish(self) -> None:
        self.stopped.set()
        self.join()
        assert self.rows > 0


def start_task(server: CdcServer, task: str, target, source, name: str) -> None:
    status, reply = server.request("POST", "/v1/tasks", {
        "task_id": task, "milvus_connect_param": {"uri": target.uri}, "collection_infos": [{"name": name}]})
    assert status == 201, reply
    create_collection(source, name, SMALL, shards=2)
    insert(source, name, make_rows(SMALL, range(2_000), seed=1))


def applying(target, name: str) -> None:
    """Until the target holds the first rows (while written, the collection grows faster than
    it can be compared)."""
    wait_until("rows on the target", lambda: [] if target.has_collection(name) and
               count(ensure_loaded(target, name)) >= 2_000 else ["not yet"], timeout=120)


def test_a_task_moves_to_its_member_and_survives_its_kill_and_its_return_with_an_empty_disk(
        tmp_path, env, source, target):
    prefix = unique_name("group")
    names = ["m0", "m1", "m2"]
    members = [member(tmp_path, env, n, prefix).start() for n in names]
    # Created on m0, placed on m1: handed over first.
    task = task_placed("m1", names, "moves")
    name = unique_name("group")
    writer = Writer(source, name)
    try:
        all_joined(members)
        start_task(members[0], task, target, source, name)
        writer.start()
        wait_owned(members, task, "m1", timeout=60)
        applying(target, name)

        m1 = members[1]
        time.sleep(2)
        m1.kill()
        took = wait_owned([members[0], members[2]], task, placed_on(task, ["m0", "m2"]), timeout=TTL + 10)
        assert took <= TTL + 5, f"taken over {took:.1f} s after the kill"

        # m1 comes back with an empty disk: the task is placed on it again and moves back.
        time.sleep(2)
        shutil.rmtree(m1.workdir / "data")
        m1.start()
        wait_owned(members, task, "m1", timeout=60)
        # Said once the claim (which the others see at once) is followed by the journal's restore.
        wait_until("m1 to take the task over", lambda: [] if "took the task over" in m1.log.read_text().split(
            "joined")[-1] else ["not yet"], timeout=30)
        time.sleep(3)

        writer.finish()
        assert_replicated(source, target, name, timeout=120)
        shown = members[0].request("GET", f"/v1/tasks/{task}")[1]
        assert (shown["state"], shown["owner"]) == ("Running", "m1"), shown
        metrics = m1.metrics()
        assert metrics["milvus_cdc_task_takeovers_total"] == 1
        assert metrics[f'milvus_cdc_task_owner{{task="{task}",member="m1"}}'] == 1
        assert metrics['milvus_cdc_group_member_heartbeat_seconds{member="m2"}'] > time.time() - 30
        # A task's gauges come from its owner alone, though the others ran it before.
        assert metrics[f'milvus_cdc_task_state{{task="{task}",state="Running"}}'] == 1
        assert metrics[f'milvus_cdc_rpo_seconds{{task="{task}"}}'] < 60
        for other in (members[0], members[2]):
            gauges = [k for k in other.metrics() if f'task="{task}"' in k and k.startswith((
                "milvus_cdc_task_state", "milvus_cdc_lag_seconds", "milvus_cdc_rpo_seconds"))]
            assert gauges == [], gauges
        # Asked of another member, a change is sent to the owner.
        status, paused = members[2].request("POST", f"/v1/tasks/{task}/pause")
        assert status == 200 and paused["state"] == "Paused", paused
    finally:
        writer.stopped.set()
        for m in members:
            m.stop()


def test_an_owner_cut_from_etcd_stops_before_its_lease_expires_and_the_next_starts_after(
        tmp_path, env, source, target):
    prefix = unique_name("group")
    names = ["m0", "m1", "m2"]
    etcd_port = int(env.get("ETCD_ENDPOINTS", "127.0.0.1:2379").rsplit(":", 1)[1])
    relays = [TcpRelay(free_port(), etcd_port).start() for _ in names]
    members = [member(tmp_path, env, n, prefix, etcd=f"127.0.0.1:{r.port}").start() for n, r in zip(names, relays)]
    task = task_placed("m0", names, "hung")
    name = unique_name("group")
    writer = Writer(source, name)
    try:
        all_joined(members)
        start_task(members[0], task, target, source, name)
        writer.start()
        applying(target, name)

        relays[0].hang()
        successor = placed_on(task, ["m1", "m2"])
        wait_owned(members[1:], task, successor, timeout=TTL + 10)
        relays[0].heal()
        time.sleep(3)
        writer.finish()
        assert_replicated(source, target, name, timeout=120)

        # Never both: the old owner stopped before the new one started, by their own logs.
        stopped = log_time(members[0], "stops before it can expire")
        new_owner = members[names.index(successor)]
        started = log_time(new_owner, "took the task over")
        assert stopped < started, (stopped, started)
    finally:
        writer.stopped.set()
        for m in members:
            m.stop()
        for r in relays:
            r.stop()


def test_a_member_joining_takes_its_share_without_a_pause_longer_than_a_lease_and_leaving_gives_it_back(tmp_path, env, source, target):
    prefix = unique_name("group")
    names = ["m0", "m1", "m2"]
    members = [member(tmp_path, env, n, prefix).start() for n in names]
    # On m2 among three, on m3 once it joins.
    task = next(t for t in (f"joins-{n}" for n in range(1000))
                if placed_on(t, names) == "m2" and placed_on(t, names + ["m3"]) == "m3")
    name = unique_name("group")
    writer = Writer(source, name)
    joining = member(tmp_path, env, "m3", prefix)
    try:
        start_task(members[2], task, target, source, name)
        writer.start()
        applying(target, name)
        joining.start()
        wait_owned(members + [joining], task, "m3", timeout=60)
        handed = log_time(members[2], "handing the task over")
        taken = log_time(joining, "took the task over")
        assert (taken - handed).total_seconds() <= TTL, (handed, taken)
        time.sleep(2)
        # Stopped (SIGTERM), it hands the task back at once, not when its lease expires.
        joining.stop()
        took = wait_owned(members, task, "m2", timeout=TTL + 10)
        assert took < TTL / 2, f"handed back {took:.1f} s after the stop"
        time.sleep(2)
        writer.finish()
        assert_replicated(source, target, name, timeout=120)
    finally:
        writer.stopped.set()
        for m in members + [joining]:
            m.stop()
