"""A task that is behind reads what the source did long ago against metadata of now: a
collection dropped and created again under its name meanwhile, a database dropped and created
again. None of it may wedge the task or mix the two collections of one name."""

import pytest
from pymilvus import DataType, FieldSchema, db

from cdc import CdcServer
from workload import (assert_replicated, create_collection, drop_database, insert, int64_pk, make_rows,
                      replicated_database, schema, unique_name)

FIRST = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=4), FieldSchema("n", DataType.INT64))
SECOND = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8),
                FieldSchema("label", DataType.VARCHAR, max_length=32))


@pytest.fixture
def database(source, target):
    name = unique_name("behind_db")
    yield name
    drop_database((source, target), name)


def test_a_collection_dropped_and_created_again_while_the_task_is_paused_ends_equal(
        tmp_path, env, source, target, names):
    name = names("behind")
    server = CdcServer(tmp_path, env).start()
    try:
        task = server.create_task(target.uri, collections=[name])
        create_collection(source, name, FIRST, shards=2)
        insert(source, name, make_rows(FIRST, range(300), seed=71))
        assert_replicated(source, target, name)

        assert server.request("POST", f"/v1/tasks/{task}/pause")[0] == 200
        insert(source, name, make_rows(FIRST, range(300, 600), seed=72))
        source.drop_collection(name)
        create_collection(source, name, SECOND, shards=1)
        insert(source, name, make_rows(SECOND, range(200), seed=73))
        assert server.request("POST", f"/v1/tasks/{task}/resume")[0] == 200

        # The first collection's late rows land in it and go with it; the second ends equal.
        assert_replicated(source, target, name, timeout=180)
        status, shown = server.request("GET", f"/v1/tasks/{task}")
        assert shown["state"] == "Running" and not shown.get("poison"), shown
    finally:
        server.stop()


def test_a_database_dropped_and_created_again_is_replayed_from_earliest(tmp_path, env, source, target, database):
    name = unique_name("behind_c")
    db.create_database(database, using=source.name)
    src = source.database(database)
    create_collection(src, name, FIRST, shards=1)
    insert(src, name, make_rows(FIRST, range(100), seed=74))
    drop_database((source,), database)
    db.create_database(database, using=source.name)
    src = source.database(database)
    create_collection(src, name, SECOND, shards=1)
    insert(src, name, make_rows(SECOND, range(150), seed=75))

    server = CdcServer(tmp_path, env).start()
    try:
        status, reply = server.post("create", {"milvus_connect_param": {"uri": target.uri, "token": ""},
                                               "db_collections": {database: [{"name": "*"}]},
                                               "start_position": "earliest"})
        assert (status, reply["code"]) == (200, 200), reply
        assert_replicated(src, replicated_database(target, database, timeout=120), name, timeout=180)
    finally:
        server.stop()
