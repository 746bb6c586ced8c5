"""A target that refuses every call (its credentials, its privileges, a database or collection
gone from it) refuses no row: the task waits with the reason, retrying, and skips nothing, even
with `skip_poison`; once the target is repaired every row arrives.

The testbed's target has authorization off, so the refusal for every call is made real another
way: the target collection's database is dropped behind the appliance's back (the collection is
moved to a database of its own first, so that the repair puts the very same collection back)."""

import pytest
from pymilvus import DataType, FieldSchema, db, utility

from workload import (assert_replicated, count, create_collection, delete, drop_database, ensure_loaded, insert,
                      int64_pk, make_rows, replicated_database, schema, unique_name, wait_until)

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


@pytest.fixture
def databases(source, target):
    """`databases(prefix)` gives a new database name; each is dropped on both sides at the end."""
    made: list[str] = []
    yield lambda prefix: made.append(unique_name(prefix)) or made[-1]
    for name in made:
        drop_database((source, target), name)


def task_of(server, task_id: str) -> dict:
    return server.request("GET", f"/v1/tasks/{task_id}")[1]


@pytest.mark.parametrize("skip_poison", [True, False], ids=["skip_poison", "strict"])
def test_a_target_refusing_every_call_makes_the_task_wait_and_skips_no_row(server, source, target, databases,
                                                                           skip_poison):
    database, parking, name = databases("refusing"), databases("parked"), unique_name("refusing")
    task_id = unique_name("refusing")
    status, reply = server.request("POST", "/v1/tasks", {
        "task_id": task_id, "milvus_connect_param": {"uri": target.uri},
        "db_collections": {database: [{"name": "*"}]}, "skip_poison": skip_poison})
    assert status == 201, reply
    db.create_database(database, using=source.name)
    src = source.database(database)
    create_collection(src, name, SMALL, shards=2)
    insert(src, name, make_rows(SMALL, range(500), seed=51))
    assert_replicated(src, replicated_database(target, database), name)

    # Behind the appliance's back: the collection leaves the target's database, which is dropped.
    db.create_database(parking, using=target.name)
    utility.rename_collection(name, name, new_db_name=parking, using=target.database(database).name)
    db.drop_database(database, using=target.name)
    insert(src, name, make_rows(SMALL, range(500, 1_500), seed=52), batch=250)
    delete(src, name, list(range(0, 1_500, 7)))

    def waiting() -> list:
        task = task_of(server, task_id)
        return [] if "collection not found" in task["reason"] else [task]
    wait_until("the task waiting with the target's refusal as its reason", waiting, timeout=90, interval=0.5)
    task = task_of(server, task_id)
    assert task["state"] == "Running" and not task.get("poison"), task
    assert server.metrics().get("milvus_cdc_poison_skipped_total", 0) == 0
    parked = ensure_loaded(target.database(parking), name)
    assert count(parked) == 500, "nothing reached the target while it refused"

    # Repaired: the database is made again and the collection moved back.
    db.create_database(database, using=target.name)
    utility.rename_collection(name, name, new_db_name=database, using=target.database(parking).name)
    assert_replicated(src, target.database(database), name, timeout=180)
    wait_until("the reason to clear", lambda: [task_of(server, task_id)["reason"]] if
               task_of(server, task_id)["reason"] else [], timeout=30, interval=0.5)
    assert task_of(server, task_id)["state"] == "Running"
    assert server.metrics().get("milvus_cdc_poison_skipped_total", 0) == 0
    server.stop()
    assert "row skipped" not in server.log.read_text()


def test_rows_of_a_collection_gone_from_both_sides_are_passed_over_and_what_follows_arrives(
        server, source, target, names):
    """The collection is dropped on the target behind the appliance's back, and on the source,
    while rows written to it before wait in the paused task: those rows are moot (its drop
    follows them), so they do not hold the task up, and a collection made afterwards arrives."""
    gone, later = names("gone_both"), names("after_gone")
    status, reply = server.request("POST", "/v1/tasks", {
        "task_id": "both", "milvus_connect_param": {"uri": target.uri},
        "collection_infos": [{"name": gone}, {"name": later}]})
    assert status == 201, reply
    create_collection(source, gone, SMALL, shards=2)
    insert(source, gone, make_rows(SMALL, range(100), seed=1))
    assert_replicated(source, target, gone, timeout=120)
    assert server.request("POST", "/v1/tasks/both/pause")[0] == 200
    insert(source, gone, make_rows(SMALL, range(100, 200), seed=2))
    target.drop_collection(gone)
    source.drop_collection(gone)
    create_collection(source, later, SMALL, shards=1)
    insert(source, later, make_rows(SMALL, range(50), seed=3))
    assert server.request("POST", "/v1/tasks/both/resume")[0] == 200
    assert_replicated(source, target, later, timeout=120)
    assert not target.has_collection(gone)
    assert (task_of(server, "both")["state"], task_of(server, "both")["reason"]) == ("Running", "")
    assert "calls passed over: the collection is on neither the source nor the target" in server.log.read_text()
