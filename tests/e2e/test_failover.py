"""Failover: the source is lost, and its target takes over.

The source Milvus is frozen (SIGSTOP) right after a write, so that the appliance has read rows
that no tick followed (the source died before it could tick past them); then every connection
of the appliance to the source's etcd and broker is cut. `milvus-cdc failover` applies what can
be applied consistently, holds the rest in a file, and reports the consistency point. The
appliance is killed just before it records the end of the failover: repeated, the command ends
in the same state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from pymilvus import DataType, FieldSchema
from pymilvus.grpc_gen import common_pb2, schema_pb2

from cdc import BINARY, CdcServer, free_port
from kafka_relay import KafkaRelay
from relay import TcpRelay
from workload import (all_rows, assert_replicated, create_collection, ensure_loaded, insert, int64_pk,
                      make_rows, schema, values_equal, wait_until)

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))
ROOT = Path(__file__).resolve().parents[2]
INSERT = 400


@contextmanager
def frozen(part: str):
    """The testbed part stopped (SIGSTOP) inside the block, and let go (SIGCONT) after it."""
    pid = int((ROOT / ".testbed" / part / "pid").read_text().split()[0])
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


def dml_topics(brokers: str, prefix: str = "by-dev") -> dict[str, tuple[int, int]]:
    """Each DML topic of the source: its end offset and the type of its last message."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "failover-test", "enable.auto.commit": False})
    try:
        topics = [t for t in consumer.list_topics(timeout=10).topics if t.startswith(f"{prefix}-rootcoord-dml_")]
        found = {}
        for topic in topics:
            _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            if end == 0:
                continue
            consumer.assign([TopicPartition(topic, 0, end - 1)])
            message = consumer.poll(10)
            assert message is not None and message.error() is None, (topic, message)
            found[topic] = (end, common_pb2.MsgHeader.FromString(message.value()).base.msg_type)
        return found
    finally:
        consumer.close()


def read_through(server: CdcServer, task: str, ends: dict[str, tuple[int, int]]) -> None:
    """Until the task's readers have read each topic to its end. The testbed's broker may
    report a topic's end one message short of what it already served while its producer is
    frozen, so a reader past the end has read it. Short: the source is frozen meanwhile, and
    Milvus exits once its etcd session lapses."""
    def behind() -> list:
        channels = server.request("GET", f"/v1/tasks/{task}/positions")[1]["channels"]
        at = {c["channel"]: c["next_offset"] for c in channels}
        return [(t, at.get(t), end) for t, (end, _) in ends.items() if at.get(t) is None or at[t] < end]
    wait_until("the task read every topic to its end", behind, timeout=15, interval=0.2)


def failover(server: CdcServer, task: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BINARY), "failover", "--task", task, "--server", server.url(""), "--timeout", "120",
                           "--json"], capture_output=True, text=True)


def held_inserts(path: Path) -> dict[int, dict]:
    """The rows of the held file's inserts, by primary key."""
    rows = {}
    for line in path.read_text().splitlines():
        held = json.loads(line)
        insert_ = held["change"].get("Insert")
        if insert_ is None:
            continue
        columns = [schema_pb2.FieldData.FromString(bytes(c)) for c in insert_["fields_data"]]
        ids = next(c for c in columns if c.field_name == "id").scalars.long_data.data
        ns = next(c for c in columns if c.field_name == "n").scalars.long_data.data
        for key, n in zip(ids, ns):
            rows[key] = {"n": n, "ts": held["ts"]}
    return rows


def test_a_failover_with_every_source_connection_cut_applies_what_it_can_and_holds_the_rest(
        tmp_path, env, source, target, names):
    brokers = env.get("KAFKA_BROKERS", "127.0.0.1:9092")
    etcd = TcpRelay(free_port(), int(env.get("ETCD_ENDPOINTS", "127.0.0.1:2379").rsplit(":", 1)[1])).start()
    kafka = KafkaRelay(free_port(), int(brokers.rsplit(":", 1)[1])).start()
    server = CdcServer(tmp_path, env, etcd_endpoint=f"127.0.0.1:{etcd.port}",
                       kafka_brokers=f"127.0.0.1:{kafka.port}")
    # Killed where the failover has written its files and not yet recorded its end.
    server.start(extra_env={"MILVUS_CDC_CRASH_AT": "failover-before-record"})
    try:
        name = names("failover")
        task = server.create_task(target.uri, collections=(name,))
        create_collection(source, name, SMALL, shards=2)
        insert(source, name, make_rows(SMALL, range(500), seed=1))
        assert_replicated(source, target, name)

        # The source writes once more and dies before it ticks past the write: tried again
        # until a topic's last message is that insert, the source frozen each time.
        for attempt in range(10):
            keys = range(1_000 * (attempt + 1), 1_000 * (attempt + 1) + 100)
            insert(source, name, make_rows(SMALL, keys, seed=2 + attempt))
            with frozen("source"):
                ends = dml_topics(brokers)
                read_through(server, task, ends)
                if any(kind == INSERT for _, kind in ends.values()):
                    etcd.cut()
                    kafka.cut()
                    break
        else:
            raise AssertionError("every write was ticked past before the source was frozen")

        crashed = failover(server, task)
        assert crashed.returncode != 0, "the appliance was to crash before recording the failover"
        assert server.wait_exit(30) != 0
        server.start()
        # Repeated at once, as a retrying client does: both calls answer the one report.
        with ThreadPoolExecutor(2) as pool:
            done, twice = pool.map(lambda _: failover(server, task), range(2))
        assert done.returncode == 0 and twice.returncode == 0, (done.stderr, twice.stderr)
        report = json.loads(done.stdout)
        assert json.loads(twice.stdout) == report

        # The target holds every row of the source but the held ones, each as the source has it.
        held = held_inserts(Path(report["held"]["file"]))
        assert held, report
        assert report["held"]["rows"] == len(held), report
        on_source = all_rows(ensure_loaded(source, name))
        on_target = all_rows(ensure_loaded(target, name))
        assert set(held) | set(on_target) == set(on_source)
        assert not set(held) & set(on_target), "a held row reached the target"
        assert all(values_equal(on_source[k], on_target[k]) for k in on_target)
        assert all(on_source[k]["n"] == row["n"] for k, row in held.items())
        assert [c for c in report["collections"] if c["collection"] == name] == [
            {"database": "default", "collection": name, "rows": len(on_target)}], report
        # The consistency point: before every held change, after every applied one.
        point = report["consistent_through"]["timestamp"]
        assert point < min(row["ts"] for row in held.values()), report
        assert report["channels"] and all(c["last_tick"]["timestamp"] >= point for c in report["channels"])

        shown = server.request("GET", f"/v1/tasks/{task}")[1]
        assert shown["state"] == "FailedOver" and shown["failover"] == report, shown
        status = server.request("GET", "/v1/status")[1]
        assert status["clusters"] == [{"name": "source", "role": "lost", "why": f"task {task} failed over from it"}]
        assert status["last_failover"] == {"task": task, "report": report}, status
        assert server.metrics()['milvus_cdc_cluster_role{cluster="source",role="lost"}'] == 1
        status, reply = server.request("POST", f"/v1/tasks/{task}/resume")
        assert status == 409 and "failed over" in reply["message"], reply
        # Repeated, the failover answers the same report.
        again = failover(server, task)
        assert again.returncode == 0 and json.loads(again.stdout) == report, again.stderr
    finally:
        server.stop()
        etcd.stop()
        kafka.stop()
