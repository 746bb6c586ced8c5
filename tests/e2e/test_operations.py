"""Operations the source writes to `by-dev-replicate-msg` reach the target in order with the data
around them: create / drop index (type, metric, params and name kept), load, release, flush,
create / drop database."""

import uuid

import pytest
from pymilvus import Collection, DataType, FieldSchema, connections, db, utility

from cdc import CdcServer
from workload import (Cluster, all_rows, assert_replicated, create_collection, index_summary, insert,
                      int64_pk, load_state, make_rows, schema, unique_name, wait_until)

OPS = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=16),
             FieldSchema("n", DataType.INT64))
IVF = {"index_type": "IVF_FLAT", "metric_type": "L2", "params": {"nlist": 16}}
HNSW = {"index_type": "HNSW", "metric_type": "IP", "params": {"M": 8, "efConstruction": 64}}


@pytest.fixture
def collection(source, target):
    name = unique_name("ops")
    yield name
    for cluster in (source, target):
        cluster.drop_collection(name)


def same_index_and_load_state(source, target, name, expected_state):
    """Problems while the target's indexes or load state differ from the source's."""
    def check():
        problems = []
        if not target.has_collection(name):
            return [f"{name} missing on the target"]
        src, dst = index_summary(source, name), index_summary(target, name)
        if src != dst:
            problems.append(f"indexes differ: source={src} target={dst}")
        states = (load_state(source, name), load_state(target, name))
        if states != (expected_state, expected_state):
            problems.append(f"load state: source={states[0]} target={states[1]}, expected {expected_state}")
        return problems
    return check


def test_index_load_release_and_flush_replicate_in_order(source, target, tmp_path, env, collection):
    server = CdcServer(tmp_path, env).start()
    try:
        server.create_task(target.uri, collections=[collection])
        coll = create_collection(source, collection, OPS, shards=2)
        insert(source, collection, make_rows(OPS, range(2_000), seed=21))
        coll.create_index("vec", IVF, index_name="ops_ivf")
        coll.load()
        coll.flush()
        wait_until("first index and load not replicated",
                   same_index_and_load_state(source, target, collection, "Loaded"))
        assert index_summary(target, collection) == [
            {"field": "vec", "name": "ops_ivf", "type": "IVF_FLAT", "metric": "L2", "params": {"nlist": "16"}}]

        insert(source, collection, make_rows(OPS, range(2_000, 3_000), seed=22))
        coll.release()
        coll.drop_index(index_name="ops_ivf")
        wait_until("release and drop index not replicated",
                   same_index_and_load_state(source, target, collection, "NotLoad"))
        assert index_summary(target, collection) == []

        coll.create_index("vec", HNSW, index_name="ops_hnsw")
        coll.load()
        wait_until("second index and load not replicated",
                   same_index_and_load_state(source, target, collection, "Loaded"))
        assert index_summary(target, collection) == [
            {"field": "vec", "name": "ops_hnsw", "type": "HNSW", "metric": "IP",
             "params": {"M": "8", "efConstruction": "64"}}]
        assert_replicated(source, target, collection, timeout=120)
        metrics = server.metrics()
        for op in ("create_index", "drop_index", "load", "release", "flush"):
            applied = sum(v for k, v in metrics.items()
                          if k.startswith("milvus_cdc_applied_changes_total{") and f'op="{op}"' in k)
            assert applied >= 1, f"no {op} counted as applied"
    finally:
        server.stop()


def in_database(cluster: Cluster, db_name: str) -> Cluster:
    """The same Milvus through a connection whose default database is `db_name`."""
    alias = f"{cluster.name}-{db_name}"
    connections.connect(alias=alias, uri=cluster.uri, db_name=db_name)
    return Cluster(alias, cluster.uri)


def test_create_and_drop_database_replicate(source, target, tmp_path, env):
    """A task on everything: a database created on the source appears on the target with its
    collection, index and load state (also when set through an alias), and goes when dropped."""
    db_name = f"ops_db_{uuid.uuid4().hex[:8]}"
    name, alias = unique_name("ops_in_db"), unique_name("ops_alias")
    server = CdcServer(tmp_path, env).start()
    try:
        server.create_task(target.uri, collections=["*"])
        db.create_database(db_name, using=source.name)
        wait_until("database not created on the target",
                   lambda: [] if db_name in db.list_database(using=target.name) else [f"no {db_name}"])

        src = in_database(source, db_name)
        create_collection(src, name, OPS, shards=1)
        insert(src, name, make_rows(OPS, range(500), seed=31))
        # Through an alias, the source's replicate-msg events name the alias; the target has
        # only the collection.
        utility.create_alias(name, alias, using=src.name)
        by_alias = Collection(alias, using=src.name)
        by_alias.create_index("vec", IVF, index_name="ops_by_alias")
        by_alias.load()
        dst = in_database(target, db_name)
        wait_until("index and load through an alias not replicated",
                   same_index_and_load_state(src, dst, name, "Loaded"))
        # Every row by key, not count(*): other tests' tasks on `*` against the same target may
        # write this collection there too.
        wait_until("rows not replicated", lambda: [] if set(all_rows(dst.collection(name))) ==
                   set(all_rows(src.collection(name))) else ["keys differ"])

        utility.drop_alias(alias, using=src.name)
        src.drop_collection(name)
        db.drop_database(db_name, using=source.name)
        wait_until("database not dropped on the target",
                   lambda: [f"{db_name} still there"] if db_name in db.list_database(using=target.name) else [])
    finally:
        server.stop()
        for cluster in (source, target):
            if db_name in db.list_database(using=cluster.name):
                for_db = in_database(cluster, db_name)
                if alias in utility.list_aliases(name, using=for_db.name) if for_db.has_collection(name) else []:
                    utility.drop_alias(alias, using=for_db.name)
                for leftover in utility.list_collections(using=for_db.name):
                    utility.drop_collection(leftover, using=for_db.name)
                db.drop_database(db_name, using=cluster.name)


def test_a_crash_after_the_target_took_an_index_replays_it_once(source, target, tmp_path, env, collection):
    """The process aborts right after the target acknowledged a replicate-msg event, before the
    journal recorded it; restarted, it sends the event again: the index is there once, and the
    operations after it follow."""
    server = CdcServer(tmp_path, env).start(extra_env={"MILVUS_CDC_CRASH_AT": "replicated-after-ack"})
    try:
        server.create_task(target.uri, collections=[collection])
        coll = create_collection(source, collection, OPS, shards=2)
        insert(source, collection, make_rows(OPS, range(1_000), seed=41))
        coll.create_index("vec", IVF, index_name="ops_ivf")
        assert server.wait_exit(timeout=60) != 0, "the failpoint was not reached"
        coll.load()
        server.start(extra_env={"MILVUS_CDC_CRASH_AT": ""})
        wait_until("index and load not replicated after the restart",
                   same_index_and_load_state(source, target, collection, "Loaded"))
        assert [i["name"] for i in index_summary(target, collection)] == ["ops_ivf"]
        assert_replicated(source, target, collection, timeout=120)
    finally:
        server.stop()


def test_earliest_brings_an_existing_collections_index_and_load_state(source, target, tmp_path, env, collection):
    """From `earliest`, the replicate-msg topic is read from its start too: a collection indexed
    and loaded before the task arrives indexed and loaded."""
    coll = create_collection(source, collection, OPS, shards=2)
    insert(source, collection, make_rows(OPS, range(1_500), seed=51))
    coll.create_index("vec", IVF, index_name="ops_before")
    coll.load()
    server = CdcServer(tmp_path, env).start()
    try:
        server.create_task(target.uri, collections=[collection], start="earliest")
        wait_until("index and load of an existing collection not replicated",
                   same_index_and_load_state(source, target, collection, "Loaded"))
        assert [i["name"] for i in index_summary(target, collection)] == ["ops_before"]
        assert_replicated(source, target, collection, timeout=120)
    finally:
        server.stop()


def test_latest_brings_an_existing_collections_index_and_load_state(source, target, tmp_path, env,
                                                                  collection):
    """A `latest` task copies no old rows, but a collection indexed and loaded before it arrives
    indexed and loaded (from the source's metadata)."""
    coll = create_collection(source, collection, OPS, shards=2)
    insert(source, collection, make_rows(OPS, range(300), seed=61))
    coll.create_index("vec", IVF, index_name="ops_old")
    coll.load()
    server = CdcServer(tmp_path, env).start()
    try:
        server.create_task(target.uri, collections=[collection])
        wait_until("index and load state of an existing collection not replicated",
                   same_index_and_load_state(source, target, collection, "Loaded"))
        assert [i["name"] for i in index_summary(target, collection)] == ["ops_old"]
    finally:
        server.stop()


def test_a_load_the_target_cannot_do_is_given_up_and_the_lane_goes_on(source, target, tmp_path, env,
                                                                       collection):
    """The target lost the index behind the task's back: a load of the collection waits for an
    index a while, is given up (logged), and the operations after it still arrive."""
    coll = create_collection(source, collection, OPS, shards=1)
    server = CdcServer(tmp_path, env).start()
    try:
        server.create_task(target.uri, collections=[collection])
        insert(source, collection, make_rows(OPS, range(300), seed=62))
        coll.create_index("vec", IVF, index_name="ops_old")
        wait_until("first index not replicated", lambda: [] if [i["name"] for i in index_summary(
            target, collection)] == ["ops_old"] else ["no index yet"])
        target.collection(collection).drop_index(index_name="ops_old")
        coll.load()
        coll.release()
        coll.drop_index(index_name="ops_old")
        coll.create_index("vec", HNSW, index_name="ops_new")
        coll.load()
        wait_until("the operations after an impossible load did not arrive",
                   same_index_and_load_state(source, target, collection, "Loaded"), timeout=180)
        assert "load skipped: the collection has no index on the target" in server.log.read_text()
    finally:
        server.stop()
