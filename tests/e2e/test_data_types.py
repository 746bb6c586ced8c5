"""Every data type and collection shape Milvus 2.3.5 can write, replicated end to end and compared
row by row: scalars, JSON, arrays, dynamic fields, float and binary vectors, int64 and varchar
primary keys, auto id, named partitions and partition-key collections.

Milvus 2.3.5 has no nullable fields or defaults it applies, and float16 vectors it accepts cannot
be read back by pymilvus 2.3.7 (see the README's coverage table)."""

import pytest
from pymilvus import DataType, FieldSchema

from cdc import CdcServer
from workload import (assert_replicated, create_collection, delete, ensure_loaded, insert, int64_pk, make_rows,
                      schema, upsert, varchar_pk)

SCALARS = schema(
    int64_pk(),
    FieldSchema("vec", DataType.FLOAT_VECTOR, dim=16),
    FieldSchema("i8", DataType.INT8),
    FieldSchema("i16", DataType.INT16),
    FieldSchema("i32", DataType.INT32),
    FieldSchema("i64", DataType.INT64),
    FieldSchema("f32", DataType.FLOAT),
    FieldSchema("f64", DataType.DOUBLE),
    FieldSchema("flag", DataType.BOOL),
    FieldSchema("text", DataType.VARCHAR, max_length=48),
    FieldSchema("doc", DataType.JSON),
    FieldSchema("ints", DataType.ARRAY, element_type=DataType.INT64, max_capacity=6),
    FieldSchema("words", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4, max_length=32),
    dynamic=True,
)


@pytest.fixture
def replicate(tmp_path, env, target):
    """Starts the appliance with a task on the given collections."""
    servers = []

    def start(*collections):
        server = CdcServer(tmp_path, env).start()
        servers.append(server)
        server.create_task(target.uri, collections=collections)
        return server

    yield start
    for server in servers:
        server.stop()


def test_every_scalar_type_json_arrays_and_dynamic_fields(source, target, names, replicate):
    name = names("types")
    replicate(name)
    create_collection(source, name, SCALARS, shards=2)
    insert(source, name, make_rows(SCALARS, range(3_000), seed=21), batch=1_000)
    delete(source, name, list(range(0, 3_000, 9)))
    upsert(source, name, make_rows(SCALARS, range(1, 3_000, 9), seed=22), batch=1_000)
    # A delete by expression reaches the MQ as the keys it matched (it needs a loaded collection).
    ensure_loaded(source, name).delete("f64 > 1.0 and i32 > 0")
    assert_replicated(source, target, name)


def test_binary_vectors_with_varchar_keys(source, target, names, replicate):
    name = names("bits")
    s = schema(varchar_pk(), FieldSchema("bits", DataType.BINARY_VECTOR, dim=64), FieldSchema("n", DataType.INT32))
    replicate(name)
    create_collection(source, name, s, shards=1)
    keys = [f"b-{i}" for i in range(2_000)]
    insert(source, name, make_rows(s, keys, seed=23), batch=500)
    delete(source, name, keys[::5])
    upsert(source, name, make_rows(s, keys[1::5], seed=24), batch=500)
    assert_replicated(source, target, name)


def test_auto_id_keeps_the_source_ids(source, target, names, replicate):
    name = names("auto")
    s = schema(int64_pk(auto_id=True), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), dynamic=True)
    replicate(name)
    create_collection(source, name, s, shards=2)
    ids = insert(source, name, make_rows(s, range(1_500), seed=25), batch=500)
    delete(source, name, ids[::4])
    # The target keeps the source's ids (auto id off there), so deletes by key still match.
    assert_replicated(source, target, name, ignore_auto_id=True)
    assert not target.collection(name).schema.auto_id


def test_rows_land_in_the_partition_they_were_written_to(source, target, names, replicate):
    """Milvus 2.3 writes no message when a partition is created: the target gets the partition
    before its first rows. A partition dropped on the source is dropped on the target."""
    name = names("parts")
    s = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8))
    replicate(name)
    coll = create_collection(source, name, s, shards=2)
    for part in ("p1", "p2", "gone"):
        coll.create_partition(part)
    insert(source, name, make_rows(s, range(0, 1_000), seed=26), partition="p1")
    insert(source, name, make_rows(s, range(1_000, 2_000), seed=27), partition="p2")
    insert(source, name, make_rows(s, range(2_000, 2_500), seed=28))
    insert(source, name, make_rows(s, range(5_000, 5_100), seed=29), partition="gone")
    delete(source, name, list(range(0, 1_000, 3)), partition="p1")
    upsert(source, name, make_rows(s, range(1_000, 1_200), seed=30), partition="p2")
    assert_replicated(source, target, name)
    coll.release()  # Milvus drops only a released partition
    coll.drop_partition("gone")
    insert(source, name, make_rows(s, range(3_000, 3_100), seed=31), partition="p1")
    assert_replicated(source, target, name)


def rows_per_partition(cluster, name: str) -> dict:
    """Each partition's stored rows, once flushed. Milvus 2.3.5 refuses partition names in a
    query of a partition-key collection ("not support manually specifying the partition names
    if partition key mode is used"), but answers each partition's statistics; these count
    deleted rows too, and a row written again (an upsert) twice."""
    coll = cluster.collection(name)
    coll.flush()
    return {p.name: p.num_entities for p in coll.partitions if p.num_entities}


def test_a_partition_key_collection_is_hashed_by_the_target(source, target, names, replicate):
    """The target hashes each row to the partition its key names on the source: after inserts
    alone, each partition holds as many rows on both sides; then deletes follow."""
    name = names("pkey")
    s = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8),
               FieldSchema("tenant", DataType.VARCHAR, max_length=16, is_partition_key=True))
    replicate(name)
    create_collection(source, name, s, shards=2)
    rows = make_rows(s, range(2_000), seed=32)
    for row in rows:
        row["tenant"] = f"t{row['id'] % 7}"
    insert(source, name, rows, batch=500)
    assert_replicated(source, target, name)
    placed = rows_per_partition(source, name)
    assert len(placed) == 7 and sum(placed.values()) == 2_000, placed
    assert rows_per_partition(target, name) == placed
    delete(source, name, list(range(0, 2_000, 6)))
    assert_replicated(source, target, name)


def test_a_collection_dropped_and_recreated_with_another_schema_while_rows_flow(source, target, names, replicate):
    """The source reuses the name with a new collection id; the target follows the drop, then
    creates the new schema, with the rows written around both."""
    name, other = names("again"), names("flowing")
    first = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8))
    second = schema(varchar_pk("key"), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=16),
                    FieldSchema("note", DataType.VARCHAR, max_length=32))
    replicate(name, other)
    create_collection(source, other, first, shards=1)
    create_collection(source, name, first, shards=2)
    insert(source, name, make_rows(first, range(1_000), seed=33), batch=250)
    insert(source, other, make_rows(first, range(500), seed=34))
    source.drop_collection(name)
    create_collection(source, name, second, shards=1)
    insert(source, other, make_rows(first, range(500, 1_000), seed=35))
    insert(source, name, make_rows(second, [f"k{i}" for i in range(800)], seed=36), batch=200)
    delete(source, name, [f"k{i}" for i in range(0, 800, 4)])
    assert_replicated(source, target, name)
    assert_replicated(source, target, other)
