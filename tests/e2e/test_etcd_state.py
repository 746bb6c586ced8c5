"""What Milvus 2.3 keeps only in its etcd and writes to no topic, replicated through the
appliance's etcd watch, in order with the rows: aliases, load and release of partitions,
collection properties. Each is checked on the target with pymilvus."""

from pymilvus import DataType, FieldSchema, connections, utility
from pymilvus.client.types import LoadState

from workload import (assert_replicated, create_collection, ensure_loaded, insert, int64_pk, make_rows, schema,
                      wait_until)

SCHEMA = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


def keys_through(cluster, alias: str) -> set:
    """The keys a query through `alias` answers (loading what it names)."""
    collection = ensure_loaded(cluster, alias)
    return {row["id"] for row in collection.query("id >= 0", output_fields=["id"], consistency_level="Strong")}


def test_an_alias_created_moved_and_dropped_is_the_same_on_the_target_and_answers_queries(source, target, names,
                                                                                          server):
    first, second, alias = names("alias_first"), names("alias_second"), names("alias")
    server.create_task(target.uri, collections=(first, second))
    for name, keys in ((first, range(10)), (second, range(100, 120))):
        create_collection(source, name, SCHEMA, shards=1)
        insert(source, name, make_rows(SCHEMA, keys, seed=1))
    for name in (first, second):
        assert_replicated(source, target, name, timeout=120)

    def names_it(collection: str | None) -> list:
        on = {c: utility.list_aliases(c, using=target.name) for c in (first, second)}
        where = [c for c, aliases in on.items() if alias in aliases]
        return [] if where == ([collection] if collection else []) else [on]

    utility.create_alias(first, alias, using=source.name)
    wait_until("the alias on the target", lambda: names_it(first), timeout=60)
    assert keys_through(target, alias) == set(range(10))

    utility.alter_alias(second, alias, using=source.name)
    wait_until("the alias moved on the target", lambda: names_it(second), timeout=60)
    assert keys_through(target, alias) == set(range(100, 120))

    utility.drop_alias(alias, using=source.name)
    wait_until("the alias dropped on the target", lambda: names_it(None), timeout=60)


def test_partitions_loaded_and_released_in_a_mixed_sequence_end_in_the_same_state_on_the_target(source, target,
                                                                                                names, server):
    name = names("parts")
    server.create_task(target.uri, collections=(name,))
    collection = create_collection(source, name, SCHEMA, shards=1)
    partitions = ("p1", "p2", "p3")
    for i, partition in enumerate(partitions):
        collection.create_partition(partition)
        insert(source, name, make_rows(SCHEMA, range(i * 100, i * 100 + 10), seed=i), partition=partition)
    collection.create_index("vec", {"index_type": "FLAT", "metric_type": "L2", "params": {}})
    assert_replicated(source, target, name, timeout=120)

    collection.load(partition_names=["p1", "p2"])
    collection.release()  # the whole collection: its ReleaseCollection comes on the replicate channel
    collection.load(partition_names=["p1", "p2"])
    source_partition = collection.partition("p1")
    source_partition.release()
    collection.load(partition_names=["p3"])

    def states(using: str) -> dict:
        return {p: utility.load_state(name, partition_names=[p], using=using) for p in partitions}

    expected = {"p1": LoadState.NotLoad, "p2": LoadState.Loaded, "p3": LoadState.Loaded}
    assert states(source.name) == expected
    wait_until("the target's partitions loaded as the source's",
               lambda: [] if states(target.name) == expected else [states(target.name)], timeout=120)


def properties(cluster, name: str) -> dict:
    return connections._fetch_handler(cluster.name).describe_collection(name)["properties"]


def test_collection_properties_set_and_changed_on_the_source_are_on_the_target(source, target, names, server):
    name = names("props")
    server.create_task(target.uri, collections=(name,))
    collection = create_collection(source, name, SCHEMA, shards=1)
    insert(source, name, make_rows(SCHEMA, range(10), seed=3))
    assert_replicated(source, target, name, timeout=120)
    for ttl in ("3600", "7200"):
        collection.set_properties({"collection.ttl.seconds": ttl})

        def has_it(ttl=ttl) -> list:
            got = properties(target, name)
            return [] if got.get("collection.ttl.seconds") == ttl else [got]

        wait_until(f"the target's TTL at {ttl} s", has_it, timeout=60)


def test_what_exists_before_the_task_an_alias_loaded_partitions_properties_is_on_the_target(source, target, names,
                                                                                           server):
    name, alias = names("before"), names("before_alias")
    collection = create_collection(source, name, SCHEMA, shards=1)
    collection.create_partition("p1")
    collection.create_partition("p2")
    insert(source, name, make_rows(SCHEMA, range(10), seed=4), partition="p1")
    collection.create_index("vec", {"index_type": "FLAT", "metric_type": "L2", "params": {}})
    collection.load(partition_names=["p1"])
    collection.set_properties({"collection.ttl.seconds": "900"})
    utility.create_alias(name, alias, using=source.name)
    server.create_task(target.uri, collections=(name,))

    def as_on_the_source() -> list:
        if not target.has_collection(name):
            return ["no collection yet"]
        got = (utility.list_aliases(name, using=target.name),
               utility.load_state(name, partition_names=["p1"], using=target.name),
               utility.load_state(name, partition_names=["p2"], using=target.name),
               properties(target, name).get("collection.ttl.seconds"))
        return [] if got == ([alias], LoadState.Loaded, LoadState.NotLoad, "900") else [got]

    wait_until("the alias, the loaded partition and the TTL on the target", as_on_the_source, timeout=120)


def test_a_collection_renamed_while_rows_flow_keeps_the_rows_from_before_and_after_under_its_new_name(
        source, target, names, server):
    name, renamed = names("before_rename"), names("after_rename")
    server.create_task(target.uri, collections=(name, renamed))
    create_collection(source, name, SCHEMA, shards=2)
    for start in range(0, 50, 10):
        insert(source, name, make_rows(SCHEMA, range(start, start + 10), seed=5))
    utility.rename_collection(name, renamed, using=source.name)
    # At once: rows written under the new name reach the target before the rename may have.
    for start in range(50, 100, 10):
        insert(source, renamed, make_rows(SCHEMA, range(start, start + 10), seed=5))
    assert_replicated(source, target, renamed, timeout=120)
    assert not target.has_collection(name)
