"""Pulsar source, end to end: a real Milvus 2.3.5 on pulsar-lite (`scripts/testbed up --pulsar`),
read by the real milvus-cdc through the test-only relay of `pulsar_relay.py`, replicated to the
testbed's target.

On pulsar-lite the source Milvus cannot flush, index or load (its own consumers reject the
broker's frames), so the source cannot be queried: the target is compared, row by row, with the
final state the test itself computes from what it wrote."""

import random
import socket
import threading
import time
from urllib.parse import urlparse

import pytest
from pymilvus import DataType, FieldSchema

from cdc import CdcServer
from certs import make_certs
from pulsar_relay import Relay
from workload import (Cluster, all_rows, count, create_collection, delete, ensure_loaded, insert, int64_pk,
                      make_rows, schema, unique_name, upsert, values_equal, wait_until)

SCHEMA = schema(
    int64_pk(),
    FieldSchema("vec", DataType.FLOAT_VECTOR, dim=32),
    FieldSchema("title", DataType.VARCHAR, max_length=64),
    FieldSchema("score", DataType.FLOAT),
    FieldSchema("doc", DataType.JSON),
)
ROWS = 20_000


def reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def broker(env) -> tuple[str, int]:
    url = env.get("PULSAR_URL")
    if not url or "SOURCE_PULSAR_MILVUS_URI" not in env:
        pytest.skip("the Pulsar testbed is not up: run scripts/testbed up --pulsar")
    parsed = urlparse(url)
    address = (parsed.hostname or "127.0.0.1", parsed.port or 6650)
    source = urlparse(env["SOURCE_PULSAR_MILVUS_URI"])
    if not reachable(address) or not reachable((source.hostname, source.port)):
        pytest.skip(f"pulsar-lite ({url}) or its source Milvus is not running: "
                    "run scripts/testbed up --pulsar")
    return address


@pytest.fixture(scope="module")
def pulsar_source(env, broker) -> Cluster:
    return Cluster("source-pulsar", env["SOURCE_PULSAR_MILVUS_URI"]).connect()


def free_relay_port() -> int:
    """A free port of 4 digits, as the relay's lookup rewrite needs (same length as 6650)."""
    for _ in range(100):
        port = random.randrange(6000, 9999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free 4-digit port for the relay")


@pytest.fixture
def relay(broker):
    relay = Relay(free_relay_port(), upstream_port=broker[1]).start()
    yield relay
    relay.stop()


@pytest.fixture
def names(pulsar_source, target):
    created = []
    yield lambda prefix: created.append(unique_name(prefix)) or created[-1]
    for name in created:
        for cluster in (pulsar_source, target):
            cluster.drop_collection(name)


def write_workload(source: Cluster, name: str) -> dict:
    """Inserts 20,000 rows, deletes 2,000 and upserts 2,000; answers the final rows by key."""
    rows = make_rows(SCHEMA, range(ROWS), seed=21)
    insert(source, name, rows, batch=5_000)
    deleted = list(range(0, ROWS, 10))
    delete(source, name, deleted)
    upserted = make_rows(SCHEMA, range(5, ROWS, 10), seed=22)
    upsert(source, name, upserted, batch=1_000)
    expected = {row["id"]: row for row in rows}
    for key in deleted:
        del expected[key]
    expected.update({row["id"]: row for row in upserted})
    return expected


def assert_target_has(target: Cluster, name: str, expected: dict, timeout: float) -> None:
    wait_until(f"{name} on the target",
               lambda: [] if target.has_collection(name) else ["no such collection"], timeout=timeout)
    coll = ensure_loaded(target, name)
    wait_until(f"{len(expected)} rows of {name} on the target",
               lambda: [] if (n := count(coll)) == len(expected) else [f"count(*) is {n}"], timeout=timeout)
    # count(*) counts a key stored twice twice: equal counts and equal keys mean no duplicate.
    rows = all_rows(coll)
    assert rows.keys() == expected.keys()
    wrong = [key for key, row in expected.items()
             if not all(values_equal(value, rows[key][field]) for field, value in row.items())]
    assert not wrong, f"{len(wrong)} rows differ, e.g. key {wrong[0]}: {rows[wrong[0]]} != {expected[wrong[0]]}"


def test_inserts_deletes_and_upserts_on_a_pulsar_source_replicate(tmp_path, env, pulsar_source, target,
                                                                  relay, names):
    name = names("pulsar")
    create_collection(pulsar_source, name, SCHEMA, shards=2)
    server = CdcServer(tmp_path, env, pulsar_url=relay.url).start()
    try:
        # `latest`: the collection exists already, so it is created on the target first.
        server.create_task(target.uri, collections=(name,))
        expected = write_workload(pulsar_source, name)
        assert_target_has(target, name, expected, timeout=300)
        assert relay.frames_reframed > 0, "no MESSAGE frame went through the relay"
    finally:
        server.stop()


def test_a_pulsar_reader_killed_at_random_moments_loses_and_doubles_nothing(tmp_path, env, pulsar_source,
                                                                           target, relay, names):
    """SIGKILLs while the workload runs: each restart resumes at the stored Pulsar MessageIds,
    and what the broker delivers again is skipped, so the target ends equal with no key twice."""
    seed = random.randrange(1 << 30)
    print(f"pulsar crash test seed {seed}")
    rng = random.Random(seed)
    name = names("pcrash")
    server = CdcServer(tmp_path, env, pulsar_url=relay.url).start()
    server.create_task(target.uri, collections=(name,), start="earliest")
    create_collection(pulsar_source, name, SCHEMA, shards=2)
    expected: dict = {}
    writer = threading.Thread(target=lambda: expected.update(write_workload(pulsar_source, name)))
    writer.start()
    kills = 0
    try:
        while writer.is_alive() or kills < 20:
            time.sleep(rng.uniform(0.2, 2.0))
            server.kill()
            kills += 1
            server.start()
        writer.join()
        assert_target_has(target, name, expected, timeout=300)
    finally:
        writer.join()
        server.stop()


def test_a_pulsar_task_started_at_another_tasks_position_continues_exactly_there(tmp_path, env, pulsar_source,
                                                                                target, relay, names):
    """A Pulsar task reports base64 MsgPositions holding MessageIds; a new task given them reads
    on from there: starting later would miss the second batch, earlier would store the first
    twice (count(*) counts a key stored twice twice)."""
    name = names("ppos")
    small = 500
    create_collection(pulsar_source, name, SCHEMA, shards=2)
    server = CdcServer(tmp_path, env, pulsar_url=relay.url).start()
    try:
        first = server.create_task(target.uri, collections=(name,))
        rows = make_rows(SCHEMA, range(small), seed=31)
        insert(pulsar_source, name, rows, batch=250)
        assert_target_has(target, name, {row["id"]: row for row in rows}, timeout=120)
        status, reply = server.post("position", {"task_id": first})
        channels = reply["data"]["positions"]["channels"]
        assert status == 200 and channels and all(c["position"] and c["next_offset"] == -1 for c in channels), reply
        assert server.post("delete", {"task_id": first}) == (200, {"code": 200, "data": {}})
        more = make_rows(SCHEMA, range(small, 2 * small), seed=32)
        insert(pulsar_source, name, more, batch=250)
        status, reply = server.post("create", {
            "milvus_connect_param": {"uri": target.uri}, "collection_infos": [{"name": name}],
            "positions": {c["channel"]: c["position"] for c in channels}})
        assert status == 200, reply
        assert_target_has(target, name, {row["id"]: row for row in rows + more}, timeout=120)
    finally:
        server.stop()


def test_a_pulsar_source_is_read_over_tls(tmp_path, env, pulsar_source, target, broker, names):
    """`pulsar+ssl://` to a TLS-only relay, trusting the test's CA through `[source.mq] ca_file`."""
    (tmp_path / "certs").mkdir()
    certs = make_certs(tmp_path / "certs")
    relay = Relay(free_relay_port(), upstream_port=broker[1], tls=certs.server_context(grpc=False)).start()
    name = names("pulsar_tls")
    create_collection(pulsar_source, name, SCHEMA, shards=2)
    server = CdcServer(tmp_path, env, pulsar_url=relay.url, mq_config=f'ca_file = "{certs.ca}"\n').start()
    try:
        server.create_task(target.uri, collections=(name,))
        expected = write_workload(pulsar_source, name)
        assert_target_has(target, name, expected, timeout=300)
        assert relay.frames_reframed > 0, "no MESSAGE frame went through the relay"
    finally:
        server.stop()
        relay.stop()


def test_the_broker_cut_for_30s_mid_stream(tmp_path, env, pulsar_source, target, relay, names):
    """Every connection of the appliance to the broker is closed, and new ones refused, for 30 s
    while the source keeps writing: the task waits, says why, and the target ends equal."""
    name = names("pbcut")
    create_collection(pulsar_source, name, SCHEMA, shards=2)
    server = CdcServer(tmp_path, env, pulsar_url=relay.url).start()
    try:
        task = server.create_task(target.uri, collections=(name,))
        before = make_rows(SCHEMA, range(4_000), seed=31)
        insert(pulsar_source, name, before, batch=2_000)
        relay.cut()
        cut_at = time.monotonic()
        during = make_rows(SCHEMA, range(4_000, 8_000), seed=32)
        insert(pulsar_source, name, during, batch=2_000)

        def reason() -> str:
            return server.request("GET", f"/v1/tasks/{task}")[1]["reason"]
        wait_until("the task to name the broker fault",
                   lambda: [] if "pulsar" in reason() and "(since " in reason() else [reason()], timeout=25)
        time.sleep(max(0.0, 30 - (time.monotonic() - cut_at)))
        relay.heal()
        assert_target_has(target, name, {row["id"]: row for row in before + during}, timeout=300)
    finally:
        server.stop()
