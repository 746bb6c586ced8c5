"""The bad day: dependencies that go away or go silent while the source is being written. The
appliance's own connections run through a relay the test controls (`relay.py`); the source
Milvus keeps its direct ones. Each fault ends with the target compared to the source row by
row."""

import time

from pymilvus import DataType, FieldSchema

from cdc import CdcServer, free_port
from kafka_relay import KafkaRelay
from relay import TcpRelay
from workload import assert_replicated, create_collection, insert, int64_pk, make_rows, schema, wait_until

SCHEMA = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


def reason(server: CdcServer, task: str) -> str:
    status, reply = server.request("GET", f"/v1/tasks/{task}")
    assert status == 200, reply
    return reply["reason"]


def wait_for_reason(server: CdcServer, task: str, fault: str, timeout: float) -> None:
    """Until the task's reason names `fault`, and says since when."""
    wait_until(f"the task to name the {fault} fault",
               lambda: [] if fault in reason(server, task) else [reason(server, task)], timeout=timeout)
    assert "(since " in reason(server, task), reason(server, task)


def wait_for_no_reason(server: CdcServer, task: str, timeout: float) -> None:
    wait_until("the fault to clear", lambda: [reason(server, task)] if reason(server, task) else [],
               timeout=timeout)


def test_etcd_silent_for_30s_while_collections_are_created_and_written(tmp_path, env, source, target, names):
    etcd_port = int(env.get("ETCD_ENDPOINTS", "127.0.0.1:2379").rsplit(":", 1)[1])
    relay = TcpRelay(free_port(), etcd_port).start()
    server = CdcServer(tmp_path, env)
    server.config.write_text(server.config.read_text().replace(
        env.get("ETCD_ENDPOINTS", "127.0.0.1:2379"), f"127.0.0.1:{relay.port}"))
    server.start()
    try:
        first, second = names("hung"), names("hung")
        task = server.create_task(target.uri, collections=(first, second))
        relay.hang()
        hung_at = time.monotonic()
        for i, name in enumerate((first, second)):
            create_collection(source, name, SCHEMA, shards=2)
            insert(source, name, make_rows(SCHEMA, range(4_000), seed=i), batch=1_000)
        # The reads of the new collections' metadata time out; the task says so, and since when.
        wait_for_reason(server, task, "etcd", timeout=28)
        assert not target.has_collection(first), "nothing of the new collections was skipped ahead"
        time.sleep(max(0.0, 30 - (time.monotonic() - hung_at)))
        relay.heal()
        assert_replicated(source, target, first, timeout=120)
        assert_replicated(source, target, second, timeout=120)
        wait_for_no_reason(server, task, timeout=30)
    finally:
        server.stop()
        relay.stop()


def test_target_cut_for_60s_mid_stream(tmp_path, env, source, target, names):
    target_port = int(target.uri.rsplit(":", 1)[1])
    relay = TcpRelay(free_port(), target_port).start()
    server = CdcServer(tmp_path, env).start()
    try:
        name = names("tcut")
        task = server.create_task(f"http://127.0.0.1:{relay.port}", collections=(name,))
        create_collection(source, name, SCHEMA, shards=2)
        insert(source, name, make_rows(SCHEMA, range(3_000), seed=5), batch=1_000)
        wait_until(f"{name} on the target",
                   lambda: [] if target.has_collection(name) else ["not yet"], timeout=60)
        relay.cut()
        cut_at = time.monotonic()
        insert(source, name, make_rows(SCHEMA, range(3_000, 9_000), seed=6), batch=1_000)
        wait_for_reason(server, task, "target", timeout=50)
        assert task_state(server, task) == "Running", "a target that is away is waited for"
        time.sleep(max(0.0, 60 - (time.monotonic() - cut_at)))
        relay.heal()
        assert_replicated(source, target, name, timeout=180)
        wait_for_no_reason(server, task, timeout=60)
    finally:
        server.stop()
        relay.stop()


def task_state(server: CdcServer, task: str) -> str:
    return server.request("GET", f"/v1/tasks/{task}")[1]["state"]


WIDE = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=64))


def staged_bytes(server: CdcServer, task: str) -> float:
    """The bytes of rows the task staged, from /metrics (the columns of each insert)."""
    return sum(v for k, v in server.metrics().items()
               if k.startswith("milvus_cdc_staged_bytes_total{") and f'task="{task}"' in k)


def test_a_task_whose_target_is_away_holds_up_no_other_task(tmp_path, env, source, target, names):
    """Each task has its own journal cap: the backlog of a task that cannot apply stops its
    own readers at the cap, a burst passing it by at most one batch per reader, and another
    task goes on."""
    cap, shards, rows, batch = 1_000_000, 2, 30_000, 2_500
    relay = TcpRelay(free_port(), int(target.uri.rsplit(":", 1)[1])).start()
    server = CdcServer(tmp_path, env)
    server.config.write_text(server.config.read_text() + f"[journal]\nmax_bytes = {cap}\n")
    server.start()
    try:
        stalled_name, flowing_name = names("stalled"), names("flowing")
        stalled = server.create_task(f"http://127.0.0.1:{relay.port}", collections=(stalled_name,))
        relay.cut()
        server.create_task(target.uri, collections=(flowing_name,))
        for i, name in enumerate((stalled_name, flowing_name)):
            create_collection(source, name, WIDE, shards=shards)
        for i, name in enumerate((stalled_name, flowing_name)):
            # About 7.7 MB each, several times the cap, in messages of about 330 kB a shard.
            insert(source, name, make_rows(WIDE, range(rows), seed=40 + i), batch=batch)
        assert_replicated(source, target, flowing_name, timeout=240)
        # The journal counts a little more than the columns (each change's names), hence 1%.
        wait_until("the stalled task's readers to reach its cap",
                   lambda: [] if staged_bytes(server, stalled) >= 0.99 * cap
                   else [f"{staged_bytes(server, stalled):.0f} bytes staged"], timeout=60)
        # Each reader of the collection's shards may pass the cap by one batch: what it saw
        # room for when the batch began (another reader staging meanwhile), the message that
        # reached the cap, and what came before the channel's next tick.
        message = 264 * batch / shards
        held = staged_bytes(server, stalled)
        assert held <= cap + shards * (cap + 2 * message), \
            f"the stalled task staged {held:.0f} bytes against a cap of {cap}: its readers did not stop"
        relay.heal()
        assert_replicated(source, target, stalled_name, timeout=240)
    finally:
        server.stop()
        relay.stop()


def test_broker_cut_for_30s_mid_stream(tmp_path, env, source, target, names):
    """Every connection of the appliance to Kafka is closed, and new ones refused, for 30 s while
    the source keeps writing."""
    brokers = env.get("KAFKA_BROKERS", "127.0.0.1:9092")
    relay = KafkaRelay(free_port(), int(brokers.rsplit(":", 1)[1])).start()
    server = CdcServer(tmp_path, env)
    server.config.write_text(server.config.read_text().replace(
        f'brokers = "{brokers}"', f'brokers = "127.0.0.1:{relay.port}"'))
    server.start()
    try:
        name = names("bcut")
        task = server.create_task(target.uri, collections=(name,))
        create_collection(source, name, SCHEMA, shards=2)
        insert(source, name, make_rows(SCHEMA, range(3_000), seed=7), batch=1_000)
        relay.cut()
        cut_at = time.monotonic()
        insert(source, name, make_rows(SCHEMA, range(3_000, 9_000), seed=8), batch=1_000)
        wait_for_reason(server, task, "kafka", timeout=28)
        time.sleep(max(0.0, 30 - (time.monotonic() - cut_at)))
        relay.heal()
        assert_replicated(source, target, name, timeout=180)
        assert relay.rewritten > 0, "the client was not kept on the relay"
    finally:
        server.stop()
        relay.stop()
