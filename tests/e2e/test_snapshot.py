"""Snapshot seeding: a task created with `start_position: "snapshot"` copies the rows that exist
before it through the source's API, while it captures what changes meanwhile from its start
positions. The task starts at `latest`, after the collections' first messages: their older rows
reach the target through the copy alone. The target ends equal to the source row by row (so no
row doubled: the counts are compared too), also when the appliance is killed during the copy."""

import base64
import random
import struct
import threading
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from pymilvus import DataType, FieldSchema
from pymilvus.grpc_gen import common_pb2, msg_pb2

from cdc import CdcServer
from test_data_types import SCALARS
from workload import (assert_replicated, create_collection, delete, ensure_loaded, insert, int64_pk, make_rows,
                      schema, upsert, varchar_pk, wait_until)

BITS = schema(varchar_pk(), FieldSchema("bits", DataType.BINARY_VECTOR, dim=64), FieldSchema("n", DataType.INT32))
AUTO = schema(int64_pk(auto_id=True), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


def existing_collections(source, names, rows: int) -> list[str]:
    """Collections written before any task: every scalar type, JSON, arrays and dynamic fields;
    a varchar key, binary vectors and a second partition; an auto-id key; a deleted subset. Loaded,
    as Milvus answers queries only on loaded collections."""
    typed, keyed, auto = names("snap_types"), names("snap_bits"), names("snap_auto")
    create_collection(source, typed, SCALARS, shards=2)
    for start in range(0, rows, 5_000):
        insert(source, typed, make_rows(SCALARS, range(start, min(start + 5_000, rows)), seed=start))
        source.collection(typed).flush()
    delete(source, typed, list(range(0, rows, 13)))
    create_collection(source, keyed, BITS, shards=1)
    source.collection(keyed).create_partition("late")
    insert(source, keyed, make_rows(BITS, [f"k{i}" for i in range(700)], seed=5))
    insert(source, keyed, make_rows(BITS, [f"late-{i}" for i in range(90)], seed=6), partition="late")
    create_collection(source, auto, AUTO, shards=1)
    insert(source, auto, make_rows(AUTO, range(1_500), seed=7))
    for name in (typed, keyed, auto):
        ensure_loaded(source, name)
    return [typed, keyed, auto]


class Writes(threading.Thread):
    """Keeps inserting new keys, and deleting and upserting old ones, of `name` until stopped."""

    def __init__(self, source, name: str, rows: int):
        super().__init__(daemon=True)
        self.source, self.name, self.rows = source, name, rows
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        rng = random.Random(11)
        next_key = 10_000_000
        try:
            while not self.done.is_set():
                insert(self.source, self.name, make_rows(SCALARS, range(next_key, next_key + 200), seed=next_key))
                next_key += 200
                delete(self.source, self.name, rng.sample(range(self.rows), 50))
                upsert(self.source, self.name, make_rows(SCALARS, rng.sample(range(self.rows), 50), seed=next_key))
                time.sleep(0.2)
        except BaseException as err:  # reported by stop()
            self.error = err

    def stop(self):
        self.done.set()
        self.join(timeout=60)
        assert self.error is None, self.error


def crashes(server: CdcServer, point: str) -> None:
    """Starts the appliance, which resumes the copy and crashes at `point` (maybe before it
    answers at all)."""
    try:
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": point})
    except RuntimeError:
        pass
    assert server.wait_exit(timeout=120) != 0


def create_snapshot_task(server: CdcServer, target, collections: list[str]) -> str:
    status, task = server.request("POST", "/v1/tasks", {
        "milvus_connect_param": {"uri": target.uri},
        "collection_infos": [{"name": c} for c in collections],
        "start_position": "snapshot"})
    assert status == 201, task
    return task["task_id"]


def wait_for_copies(server: CdcServer, task: str, timeout: float) -> None:
    """Until the task shows every collection's snapshot copy done."""
    def left() -> list:
        status, reply = server.request("GET", f"/v1/tasks/{task}")
        assert status == 200, reply
        copies = reply.get("snapshot", [])
        return [c for c in copies if not c["done"]] if copies else ["no copies shown yet"]
    wait_until("every snapshot copy to be done", left, timeout=timeout)


def test_a_snapshot_task_copies_existing_rows_while_changes_go_on(source, target, names, server):
    rows = 12_000
    collections = existing_collections(source, names, rows)
    writes = Writes(source, collections[0], rows)
    writes.start()
    task = create_snapshot_task(server, target, collections)
    # The changes go on for the whole copy, and stop only once every collection is copied.
    wait_for_copies(server, task, timeout=240)
    writes.stop()
    for name in collections:
        assert_replicated(source, target, name, timeout=240)


def test_a_snapshot_copy_killed_three_times_resumes_without_doubling_a_row(source, target, names, tmp_path, env):
    rows = 30_000
    collections = existing_collections(source, names, rows)
    writes = Writes(source, collections[0], rows)
    writes.start()
    server = CdcServer(tmp_path, env)
    try:
        # Killed after a page is on the target and before the copy's progress says so, then
        # after the progress marked a page in doubt and before it was sent.
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": "snapshot-after-send"})
        task = create_snapshot_task(server, target, collections)
        assert server.wait_exit(timeout=120) != 0
        crashes(server, "snapshot-after-mark")
        # And at a moment of nobody's choosing, a page or two later.
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": "", "MILVUS_CDC_DELAY_AT": "snapshot-page:400"})
        time.sleep(random.uniform(1.0, 3.0))
        server.kill()
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": "", "MILVUS_CDC_DELAY_AT": ""})
        # The changes go on while the resumed copies end.
        wait_for_copies(server, task, timeout=240)
        writes.stop()
        for name in collections:
            assert_replicated(source, target, name, timeout=300)
    finally:
        writes.done.set()
        server.stop()


def last_delete_of(env, name: str) -> tuple[str, int]:
    """The source's topic and offset of the last Delete message of collection `name`."""
    brokers = env.get("KAFKA_BROKERS", "127.0.0.1:9092")
    topics = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=10).topics
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "snapshot-test", "enable.auto.commit": False})
    found = None
    try:
        for topic in sorted(t for t in topics if t.startswith("by-dev-rootcoord-dml_")):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            consumer.assign([TopicPartition(topic, 0, max(low, high - 200))])
            while (message := consumer.poll(10)) is not None:
                kind = common_pb2.MsgHeader.FromString(message.value()).base.msg_type
                if kind == common_pb2.MsgType.Value("Delete") \
                        and msg_pb2.DeleteRequest.FromString(message.value()).collection_name == name:
                    found = (topic, message.offset())
                if message.offset() >= high - 1:
                    break
    finally:
        consumer.close()
    assert found, f"no Delete of {name} in the source's topics"
    return found


def test_a_task_started_between_the_two_messages_of_an_upsert_keeps_the_rows_it_wrote(source, target, names, server,
                                                                                      env):
    """Milvus writes an upsert as an Insert, then a Delete of the same keys. A task whose start
    falls between them reads the Delete alone; the copy has the rows as the upsert left them,
    and replaying the Delete after it would remove them."""
    name = names("snap_split")
    create_collection(source, name, BITS, shards=1)
    insert(source, name, make_rows(BITS, [f"k{i}" for i in range(100)], seed=1))
    upsert(source, name, make_rows(BITS, [f"k{i}" for i in range(20)], seed=2))
    ensure_loaded(source, name)
    topic, offset = last_delete_of(env, name)
    position = msg_pb2.MsgPosition(channel_name=topic, msgID=struct.pack("<q", offset))
    status, task = server.request("POST", "/v1/tasks", {
        "milvus_connect_param": {"uri": target.uri},
        "collection_infos": [{"name": name}],
        "start_position": "snapshot",
        "positions": {topic: base64.b64encode(position.SerializeToString()).decode()}})
    assert status == 201, task
    assert_replicated(source, target, name, timeout=120)


def test_a_collection_not_loaded_on_the_source_waits_with_the_reason_until_it_is(source, target, names, server):
    name = names("snap_unloaded")
    create_collection(source, name, BITS, shards=1)
    insert(source, name, make_rows(BITS, [f"u{i}" for i in range(300)], seed=8))
    task = create_snapshot_task(server, target, [name])

    def waiting_with_the_reason() -> list:
        _, view = server.request("GET", f"/v1/tasks/{task}")
        reason = view["reason"]
        return [] if view["state"] == "Running" and "snapshot:" in reason and "since" in reason else [view]

    wait_until("the copy waiting for the source to load the collection", waiting_with_the_reason, timeout=60)
    ensure_loaded(source, name)
    assert_replicated(source, target, name, timeout=120)
    _, view = server.request("GET", f"/v1/tasks/{task}")
    assert view["snapshot"][0]["done"] and view["snapshot"][0]["rows_copied"] == 300, view
