"""Poisons: what the appliance cannot replicate stops the task, named, and only an operator's
decision moves past it.

- Bad messages on a real DML topic (its own prefix, so the source Milvus never sees the
  garbage): the task stops on each with its channel and offset, `dump` shows the message, and
  `task skip` moves past exactly that one. A task created with `skip_poison` passes over every
  one, logged and counted.
- A row the real target refuses (its collection re-created there with a shorter VARCHAR): the
  task stops on that row, the rows before it applied once, and a skip lets the rows after it
  through."""

import subprocess
import uuid

import pytest
from confluent_kafka import Producer
from pymilvus import DataType, FieldSchema
from pymilvus.grpc_gen import common_pb2

from cdc import BINARY, CdcServer
from workload import all_rows, create_collection, ensure_loaded, int64_pk, schema, wait_until


def time_tick(ts: int) -> bytes:
    header = common_pb2.MsgHeader()
    header.base.msg_type = common_pb2.MsgType.TimeTick
    header.base.timestamp = ts
    return header.SerializeToString()


def bad_messages() -> list[bytes]:
    """A tick, four poisons (offsets 2 to 5 once the topic holds one message before), a tick."""
    insert = common_pb2.MsgHeader()
    insert.base.msg_type = common_pb2.MsgType.Insert
    truncated = insert.SerializeToString() + b"\x6a\x10abc"  # field 13 claims 16 bytes, has 3
    unknown = common_pb2.MsgHeader()
    unknown.base.msg_type = 99_999
    return [time_tick(5), b"not a milvus message \xff\xfe", truncated, unknown.SerializeToString(), b"",
            time_tick(9)]


@pytest.fixture
def appliance(tmp_path, env):
    """`appliance(**options)` starts the appliance; it is stopped at the end, failed test or not."""
    started: list[CdcServer] = []
    yield lambda **options: started.append(CdcServer(tmp_path, env, **options).start()) or started[-1]
    for server in started:
        server.stop()


def junk_topic(env) -> tuple[str, str, Producer]:
    """A DML topic of a prefix of its own, created (one message at offset 0) before any task."""
    prefix = f"junk{uuid.uuid4().hex[:6]}"
    topic = f"{prefix}-rootcoord-dml_0"
    producer = Producer({"bootstrap.servers": env.get("KAFKA_BROKERS", "127.0.0.1:9092")})
    producer.produce(topic, b"topic", partition=0)
    producer.flush(10)
    return prefix, topic, producer


def create(server: CdcServer, target, task_id: str, **extra) -> None:
    status, reply = server.request("POST", "/v1/tasks", {
        "milvus_connect_param": {"uri": target.uri}, "collection_infos": [{"name": "*"}],
        "task_id": task_id, **extra})
    assert status == 201, reply


def wait_for_state(server: CdcServer, task_id: str, state: str, timeout: float = 60) -> dict:
    task: dict = {}

    def problems() -> list:
        nonlocal task
        task = server.request("GET", f"/v1/tasks/{task_id}")[1]
        return [] if task["state"] == state else [task]
    wait_until(f"task {task_id} {state}", problems, timeout=timeout, interval=0.3)
    return task


def wait_read_through(server: CdcServer, task_id: str, topic: str, next_offset: int) -> None:
    """Until the task's reader of `topic` has staged everything before `next_offset`."""
    def behind() -> list:
        channels = server.post("position", {"task_id": task_id})[1]["data"]["positions"]["channels"]
        at = next((c for c in channels if c["channel"] == topic), {})
        return [] if at.get("next_offset") == next_offset else [at]
    wait_until(f"{topic} read up to offset {next_offset}", behind, timeout=30, interval=0.2)


def dump(server: CdcServer, *args: str) -> str:
    return subprocess.run([str(BINARY), "dump", "--data-dir", str(server.workdir / "data"), *args],
                          capture_output=True, text=True, check=True).stdout


def test_a_bad_message_stops_the_task_and_only_an_operator_skip_moves_past_it(appliance, env, target):
    prefix, topic, producer = junk_topic(env)
    server = appliance(channel_prefix=prefix)
    create(server, target, "junk")
    for payload in bad_messages():
        producer.produce(topic, payload, partition=0)  # Milvus uses partition 0 only
    producer.flush(10)

    task = wait_for_state(server, "junk", "Failed")
    assert task["poison"]["at"] == {"message": {"channel": topic, "id": {"Kafka": 2}}}, task
    assert topic in task["reason"] and "offset=2" in task["reason"] and "task skip junk" in task["reason"], task
    # Only the poison was judged: the three bad messages after it were never read.
    assert server.metrics()["milvus_cdc_messages_rejected_total"] == 1

    # The operator looks at the message: the appliance is stopped for dump, and started again.
    server.stop()
    shown = dump(server, "--task", "junk")
    assert f"poison    junk message of 23B: {b'not a milvus message'.hex()}" in shown, shown
    assert f"{topic} next=kafka next_offset=2 tick=5" in shown, "the channel stays at the poison"
    server.start()
    assert server.request("GET", "/v1/tasks/junk")[1]["state"] == "Failed", "a restart does not skip it"

    # `task skip` (the CLI) moves past exactly offset 2; the task stops on offset 3 next.
    cli = subprocess.run([str(BINARY), "task", "--server", server.url(""), "skip", "junk"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    task = wait_for_state(server, "junk", "Failed")
    assert task["poison"]["at"]["message"]["id"] == {"Kafka": 3}, task
    # A client repeating the first skip skips nothing more: the task is on another poison.
    status, reply = server.request("POST", "/v1/tasks/junk/skip",
                                   {"at": {"message": {"channel": topic, "id": {"Kafka": 2}}}})
    assert status == 409 and "offset=3" in reply["message"], reply
    for offset in (3, 4, 5):
        at = {"message": {"channel": topic, "id": {"Kafka": offset}}}
        wait_for_state(server, "junk", "Failed")
        status, reply = server.request("POST", "/v1/tasks/junk/skip", {"at": at})
        assert status == 200, reply
    wait_for_state(server, "junk", "Running")
    skipped = lambda: server.metrics().get("milvus_cdc_poison_skipped_total", 0)  # noqa: E731
    wait_until("the four approved poisons passed over", lambda: [] if skipped() >= 4 else [skipped()],
               timeout=30, interval=0.2)
    wait_read_through(server, "junk", topic, next_offset=7)
    assert skipped() == 4
    server.stop()

    log = server.log.read_text()
    assert log.count("skip approved by the operator") == 4, log[-3000:]
    # Every message was passed: the next offset is after the last one, and the last tick was read.
    assert f"{topic} next=kafka next_offset=7 tick=9" in dump(server, "--channel", topic)


def test_a_task_with_skip_poison_passes_over_bad_messages_logged_and_counted(appliance, env, target):
    prefix, topic, producer = junk_topic(env)
    server = appliance(channel_prefix=prefix)
    create(server, target, "lenient", skip_poison=True)
    for payload in bad_messages():
        producer.produce(topic, payload, partition=0)
    producer.flush(10)

    passed = lambda: server.metrics().get("milvus_cdc_poison_skipped_total", 0)
    wait_until("four poisons passed over", lambda: [] if passed() >= 4 else [passed()], timeout=30, interval=0.2)
    wait_read_through(server, "lenient", topic, next_offset=7)
    assert passed() == 4
    assert server.metrics()["milvus_cdc_messages_rejected_total"] == 4  # the empty one too
    assert server.request("GET", "/v1/tasks/lenient")[1]["state"] == "Running"
    server.stop()

    log = server.log.read_text()
    for offset in (2, 3, 4, 5):
        assert f"offset={offset}" in log and topic in log, f"offset {offset} not logged:\n{log[-2000:]}"
    assert f"{topic} next=kafka next_offset=7 tick=9" in dump(server, "--channel", topic)


def typed(msg_type: int, ts: int) -> bytes:
    """A message with only a header, of type `msg_type`."""
    header = common_pb2.MsgHeader()
    header.base.msg_type = msg_type
    header.base.timestamp = ts
    return header.SerializeToString()


def test_a_type_that_carries_nothing_is_counted_and_one_that_carries_rows_stops_the_task(appliance, env, target):
    show_collections, upsert = 104, 404
    prefix, topic, producer = junk_topic(env)
    server = appliance(channel_prefix=prefix)
    create(server, target, "types")
    for payload in [time_tick(5), typed(show_collections, 6), typed(show_collections, 7), typed(upsert, 8),
                    time_tick(9)]:
        producer.produce(topic, payload, partition=0)
    producer.flush(10)

    task = wait_for_state(server, "types", "Failed")
    assert task["poison"]["at"] == {"message": {"channel": topic, "id": {"Kafka": 4}}}, task
    assert "message type Upsert (404) carries rows" in task["reason"], task
    assert server.metrics()['milvus_cdc_messages_ignored_total{type="ShowCollections"}'] == 2
    server.stop()
    log = server.log.read_text()
    assert log.count("the first of its type") == 1 and "ShowCollections" in log, log[-3000:]
    assert f"{topic} next=kafka next_offset=4 tick=5" in dump(server, "--channel", topic), "it stays at the Upsert"


def test_a_row_the_target_refuses_stops_the_task_on_that_row_until_skipped(appliance, source, target, names):
    name = names("refused")
    fields = lambda length: schema(int64_pk(), FieldSchema("label", DataType.VARCHAR, max_length=length),
                                   FieldSchema("vec", DataType.FLOAT_VECTOR, dim=4))
    server = appliance()
    create_collection(source, name, fields(64), shards=1)
    create(server, target, "refused", collection_infos=[{"name": name}])
    wait_until("the collection on the target", lambda: [] if target.has_collection(name) else [name])
    # An operator re-creates it on the target with a label too short for some of the rows.
    target.drop_collection(name)
    create_collection(target, name, fields(8), shards=1)

    row = lambda key, label: {"id": key, "label": label, "vec": [float(key)] * 4}
    coll = source.collection(name)
    for batch in ([row(1, "short")], [row(2, "much too long for it")], [row(3, "fine")]):
        coll.insert(batch)

    task = wait_for_state(server, "refused", "Failed", timeout=120)
    at = task["poison"]["at"]["row"]
    assert at["vchannel"].endswith("v0") and task["poison"]["ts"] == at["position"]["ts"], task
    assert "label" in task["poison"]["error"] or "length" in task["poison"]["error"], task
    on_target = ensure_loaded(target, name)
    assert sorted(all_rows(on_target)) == [1], "the row before it, and nothing after it"

    status, reply = server.request("POST", "/v1/tasks/refused/skip", {"at": task["poison"]["at"]})
    assert status == 200, reply
    wait_until("the row after the poison on the target",
               lambda: [] if 3 in all_rows(on_target) else [sorted(all_rows(on_target))], timeout=60)
    rows = all_rows(on_target)
    assert sorted(rows) == [1, 3], rows
    assert [rows[k]["label"] for k in (1, 3)] == ["short", "fine"]
    assert server.request("GET", "/v1/tasks/refused")[1]["state"] == "Running"
    server.stop()
    assert "row skipped, as the operator approved" in server.log.read_text()
