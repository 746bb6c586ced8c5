"""Databases: a task names collections per database (`db_collections`, as the reference CDC), or
takes every collection of every database with `*`; collections land in the same database on the
target, which is created there when missing."""

import pytest
from pymilvus import DataType, FieldSchema, db

from workload import (assert_replicated, create_collection, delete, drop_database, insert, int64_pk, make_rows,
                      replicated_database, schema, unique_name)

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


@pytest.fixture
def database(source, target):
    """A database name; at the end it is dropped on both sides with its collections."""
    name = unique_name("db")
    yield name
    drop_database((source, target), name)


def create_task(server, target, **scope):
    status, reply = server.post("create", {"milvus_connect_param": {"uri": target.uri, "token": ""}, **scope})
    assert (status, reply["code"]) == (200, 200), reply
    return reply["data"]["task_id"]


def test_db_collections_replicates_the_named_database_only(server, source, target, database):
    name = unique_name("dbc")
    task = create_task(server, target, db_collections={database: [{"name": "*"}]})
    shown = server.post("get", {"task_id": task})[1]["data"]["task"]
    assert shown["collection_infos"] == [] and shown["db_collections"] == {database: [{"name": "*"}]}
    db.create_database(database, using=source.name)
    src = source.database(database)
    create_collection(src, name, SMALL, shards=2)
    create_collection(source, name, SMALL, shards=1)  # the same name in the default database
    try:
        insert(src, name, make_rows(SMALL, range(2_000), seed=41), batch=500)
        insert(source, name, make_rows(SMALL, range(100), seed=42))
        delete(src, name, list(range(0, 2_000, 10)))
        assert_replicated(src, replicated_database(target, database), name)
        assert not target.has_collection(name), "a collection of the default database was replicated"
    finally:
        source.drop_collection(name)


def test_star_replicates_every_database(server, source, target, database):
    name = unique_name("star")
    create_task(server, target, collection_infos=[{"name": "*"}])
    db.create_database(database, using=source.name)
    src = source.database(database)
    create_collection(src, name, SMALL, shards=2)
    insert(src, name, make_rows(SMALL, range(1_000), seed=43), batch=500)
    assert_replicated(src, replicated_database(target, database), name)


def test_name_mapping_puts_a_collection_under_its_target_name(server, source, target, database):
    name, copy = unique_name("mapped"), unique_name("copy")
    create_task(server, target, collection_infos=[{"name": name}],
                name_mapping=[{"source_db": "default", "target_db": database, "col_mapping": {name: copy}}])
    create_collection(source, name, SMALL, shards=2)
    try:
        insert(source, name, make_rows(SMALL, range(1_500), seed=44), batch=500)
        delete(source, name, list(range(0, 1_500, 5)))
        assert_replicated(source, replicated_database(target, database), name, target_name=copy)
        assert not target.has_collection(name), "replicated under its source name too"
    finally:
        source.drop_collection(name)


def test_an_excluded_collection_is_left_out(server, source, target):
    kept, left = unique_name("kept"), unique_name("left")
    task = create_task(server, target, collection_infos=[{"name": "*"}],
                       exclude_db_collections={"default": [{"name": left}]})
    assert server.post("get", {"task_id": task})[1]["data"]["task"]["exclude_db_collections"] == {
        "default": [{"name": left}]}
    try:
        for name in (kept, left):
            create_collection(source, name, SMALL, shards=1)
            insert(source, name, make_rows(SMALL, range(300), seed=45))
        assert_replicated(source, target, kept)
        assert not target.has_collection(left)
    finally:
        for name in (kept, left):
            source.drop_collection(name)
            target.drop_collection(name)
