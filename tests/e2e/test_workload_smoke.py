"""The workload library itself, against the two real Milvus of the testbed: the same rows written
straight to both clusters compare equal, and any difference is reported."""

import pytest
from pymilvus import DataType, FieldSchema

from workload import (NotReplicated, assert_replicated, create_collection, delete, insert, int64_pk,
                      make_rows, schema, unique_name, upsert, varchar_pk)

ALL_TYPES = schema(
    int64_pk(),
    FieldSchema("vec", DataType.FLOAT_VECTOR, dim=16),
    FieldSchema("name", DataType.VARCHAR, max_length=32),
    FieldSchema("i8", DataType.INT8),
    FieldSchema("i16", DataType.INT16),
    FieldSchema("i32", DataType.INT32),
    FieldSchema("f32", DataType.FLOAT),
    FieldSchema("f64", DataType.DOUBLE),
    FieldSchema("flag", DataType.BOOL),
    FieldSchema("doc", DataType.JSON),
    dynamic=True,
)


@pytest.fixture
def twin(source, target):
    """A collection name that exists on both clusters during one test."""
    name = unique_name("smoke")
    yield name
    for cluster in (source, target):
        cluster.drop_collection(name)


def write_same(clusters, name, collection_schema, keys, seed):
    for cluster in clusters:
        create_collection(cluster, name, collection_schema)
        insert(cluster, name, make_rows(collection_schema, keys, seed), batch=700)


def test_identical_writes_compare_equal(source, target, twin):
    write_same((source, target), twin, ALL_TYPES, range(2000), seed=7)
    for cluster in (source, target):
        delete(cluster, twin, list(range(0, 2000, 10)))
        upsert(cluster, twin, make_rows(ALL_TYPES, range(1, 400, 10), seed=8))
    assert_replicated(source, target, twin, timeout=30)


def test_binary_vectors_compare_equal(source, target, twin):
    # Milvus 2.3 allows one vector field per collection.
    s = schema(int64_pk(), FieldSchema("bits", DataType.BINARY_VECTOR, dim=32))
    write_same((source, target), twin, s, range(500), seed=4)
    assert_replicated(source, target, twin, timeout=30)


def test_varchar_primary_keys_compare_equal(source, target, twin):
    s = schema(varchar_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8))
    write_same((source, target), twin, s, [f"key-{i}" for i in range(500)], seed=3)
    assert_replicated(source, target, twin, timeout=30)


def test_a_missing_row_is_reported(source, target, twin):
    write_same((source, target), twin, ALL_TYPES, range(300), seed=1)
    delete(target, twin, [42])
    with pytest.raises(NotReplicated, match=r"1 rows missing on target, e.g. \[42\]"):
        assert_replicated(source, target, twin, timeout=0)


def test_a_changed_vector_is_reported(source, target, twin):
    write_same((source, target), twin, ALL_TYPES, range(300), seed=1)
    upsert(target, twin, make_rows(ALL_TYPES, [7], seed=2))
    with pytest.raises(NotReplicated, match="1 rows differ, e.g. pk 7"):
        assert_replicated(source, target, twin, timeout=0)


def test_a_duplicate_primary_key_is_reported(source, target, twin):
    write_same((source, target), twin, ALL_TYPES, range(300), seed=1)
    insert(target, twin, make_rows(ALL_TYPES, [5], seed=1))
    with pytest.raises(NotReplicated, match="duplicate primary keys on target"):
        assert_replicated(source, target, twin, timeout=0)


def test_a_missing_collection_is_reported(source, target, twin):
    create_collection(source, twin, ALL_TYPES)
    with pytest.raises(NotReplicated, match=f"collection {twin} missing on target"):
        assert_replicated(source, target, twin, timeout=0)


def test_a_row_in_another_partition_is_reported(source, target, twin):
    s = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8))
    for cluster, part in ((source, "p1"), (target, "p2")):
        coll = create_collection(cluster, twin, s)
        coll.create_partition("p1")
        coll.create_partition("p2")
        insert(cluster, twin, make_rows(s, range(100), seed=1), partition=part)
    with pytest.raises(NotReplicated, match="partition p1 holds 100 rows on source, 0 on target"):
        assert_replicated(source, target, twin, timeout=0)
