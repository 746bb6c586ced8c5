"""What Milvus 2.3 keeps only in its etcd and writes to no topic, replicated through the
appliance's etcd watch, in order with the rows: aliases, load and release of partitions,
collection properties. Each is checked on the target with pymilvus."""

import collections
import json
import random
import re
import subprocess
import threading
import time

from pymilvus import DataType, FieldSchema, MilvusException, Role, connections, utility
from pymilvus.client.types import LoadState

from cdc import BINARY, CdcServer, free_port
from relay import TcpRelay
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

    def as_on_the_source(expected: dict) -> None:
        assert states(source.name) == expected
        wait_until("the target's partitions loaded as the source's",
                   lambda: [] if states(target.name) == expected else [states(target.name)], timeout=120)

    as_on_the_source({"p1": LoadState.NotLoad, "p2": LoadState.Loaded, "p3": LoadState.Loaded})
    # Releasing the last loaded partitions one by one unloads the collection: Milvus removes
    # its load record as it does for a release of the whole collection, but writes no message.
    collection.partition("p2").release()
    collection.partition("p3").release()
    collection.load(partition_names=["p1"])
    collection.partition("p1").release()
    collection.load(partition_names=["p2"])
    as_on_the_source({"p1": LoadState.NotLoad, "p2": LoadState.Loaded, "p3": LoadState.NotLoad})


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


def test_a_burst_of_metadata_changes_under_sigkills_stages_each_once_and_ends_as_the_source(
        source, target, tmp_path, env, names):
    """Aliases made, moved and dropped, properties set, partitions loaded and released, while
    the appliance is SIGKILLed again and again: the journal holds every change exactly once,
    and the target ends as the source.

    The target is cut off during the burst, so every change stays in the journal to be
    counted there: a log line said after the commit would be lost to a SIGKILL that lands
    after the commit is on disk and before the appliance hears of it."""
    seed = random.randrange(1 << 30)
    print(f"metadata burst seed {seed}")
    rng = random.Random(seed)
    server = CdcServer(tmp_path, env).start()
    relay = TcpRelay(free_port(), int(target.uri.rsplit(":", 1)[1])).start()
    pair = (names("burst_a"), names("burst_b"))
    aliases = [names("burst_alias") for _ in range(3)]
    task = server.create_task(f"http://127.0.0.1:{relay.port}", collections=pair)
    for name in pair:
        collection = create_collection(source, name, SCHEMA, shards=1)
        for partition in ("p1", "p2"):
            collection.create_partition(partition)
        collection.create_index("vec", {"index_type": "FLAT", "metric_type": "L2", "params": {}})
    wait_until("both collections on the target", lambda: [n for n in pair if not target.has_collection(n)],
               timeout=60)
    relay.cut()

    made = collections.Counter()
    alias_on: dict[str, str | None] = {a: None for a in aliases}
    loaded: set = set()

    def burst() -> None:
        first = source.collection(pair[0])
        for i in range(12):
            alias = aliases[i % len(aliases)]
            on = alias_on[alias]
            if on is None:
                utility.create_alias(pair[i % 2], alias, using=source.name)
                alias_on[alias], op = pair[i % 2], "create_alias"
            elif i % 3:
                other = pair[1] if on == pair[0] else pair[0]
                utility.alter_alias(other, alias, using=source.name)
                alias_on[alias], op = other, "alter_alias"
            else:
                utility.drop_alias(alias, using=source.name)
                alias_on[alias], op = None, "drop_alias"
            made[op] += 1
            source.collection(pair[i % 2]).set_properties({"collection.ttl.seconds": str(100 + i)})
            made["alter_collection"] += 1
            partition = ("p1", "p2")[i % 2]
            if partition in loaded:
                first.partition(partition).release()
                loaded.discard(partition)
                made["release_partitions"] += 1
            else:
                first.load(partition_names=[partition])
                loaded.add(partition)
                made["load_partitions"] += 1

    writer = threading.Thread(target=burst)
    writer.start()
    kills = 0
    try:
        while writer.is_alive():
            time.sleep(rng.uniform(0.3, 1.5))
            server.kill()
            kills += 1
            server.start()
        writer.join()
        wait_until("every change staged", lambda: [] if staged(server, task) == made else [staged(server, task)],
                   timeout=60)
        relay.heal()

        def state(cluster) -> list:
            return [[(sorted(utility.list_aliases(n, using=cluster.name)),
                      properties(cluster, n).get("collection.ttl.seconds")) for n in pair],
                    [utility.load_state(pair[0], partition_names=[p], using=cluster.name) for p in ("p1", "p2")]]

        def differs() -> list:
            try:
                got = state(target)
            except MilvusException as err:  # a partition not made on the target yet
                return [err]
            return [] if got == expected else [got]

        expected = state(source)
        wait_until("the target as the source", differs, timeout=120)
    finally:
        writer.join()
        server.stop()
        relay.stop()
        for cluster in (source, target):
            for alias in aliases:
                for name in pair:
                    if cluster.has_collection(name) and alias in utility.list_aliases(name, using=cluster.name):
                        utility.drop_alias(alias, using=cluster.name)
    assert kills >= 5, kills


JOURNAL_OPERATIONS = {"create alias": "create_alias", "alter alias": "alter_alias", "drop alias": "drop_alias",
                      "alter collection": "alter_collection", "load partitions": "load_partitions",
                      "release partitions": "release_partitions"}


def staged(server: CdcServer, task: str) -> collections.Counter:
    """The metadata changes in the task's journal, counted by operation (read while the
    appliance is stopped, as `dump` needs)."""
    server.stop()
    try:
        rows = subprocess.run([str(BINARY), "dump", "--data-dir", str(server.workdir / "data"), "--task", task],
                              capture_output=True, text=True, check=True).stdout
    finally:
        server.start()
    return collections.Counter(JOURNAL_OPERATIONS[what] for what in
                               re.findall(r"^row .*\dB (" + "|".join(JOURNAL_OPERATIONS) + ") ", rows, re.M))


def test_with_rbac_roles_grants_and_a_bound_user_are_on_the_target_and_the_password_is_never_shown(
        source, target, names, server):
    """Grants need a user on the connection: the task reaches the target as root, and the test
    reads both sides as root (the testbed's Milvus has authentication off)."""
    name, role, dropped, user = names("rbac"), names("role"), names("dropped_role"), names("user")
    password = "Target-password-1"
    status, reply = server.post("create", {
        "milvus_connect_param": {"uri": target.uri, "token": "root:Milvus"},
        "collection_infos": [{"name": name}],
        "rbac": {"user_password": password},
    })
    assert status == 200 and reply["code"] == 200, reply
    as_root = {side: f"{cluster.name}-root" for side, cluster in (("source", source), ("target", target))}
    for side, cluster in (("source", source), ("target", target)):
        connections.connect(as_root[side], uri=cluster.uri, user="root", password="Milvus")
    on_source = Role(role, using=as_root["source"])
    try:
        utility.create_user(user, "Source-password-1", using=as_root["source"])
        on_source.create()
        for privilege in ("Search", "Query", "Insert"):
            on_source.grant("Collection", name, privilege)
        on_source.grant("Global", "*", "DescribeCollection")
        on_source.revoke("Collection", name, "Query")
        on_source.add_user(user)
        Role(dropped, using=as_root["source"]).create()
        Role(dropped, using=as_root["source"]).drop()

        def access(side: str) -> tuple:
            cluster = as_root[side]
            roles = {r.role_name for r in utility.list_roles(False, using=cluster).groups}
            if role not in roles:
                return roles, None, None, None
            grants = {(g.object, g.object_name, g.privilege, g.db_name)
                      for g in Role(role, using=cluster).list_grants().groups}
            return (roles, grants, Role(role, using=cluster).get_users(),
                    user in utility.list_usernames(using=cluster))

        expected = access("source")
        assert expected[1] == {("Collection", name, "Search", "default"), ("Collection", name, "Insert", "default"),
                               ("Global", "*", "DescribeCollection", "default")}, expected
        assert dropped not in expected[0]
        wait_until("the role, its grants and its user on the target",
                   lambda: [] if access("target") == expected else [access("target")], timeout=60)
        # The user was made with the task's password, which no reply shows.
        listed = json.dumps(server.request("GET", "/v1/tasks")[1])
        assert password not in listed and '"makes_users": true' in listed, listed
    finally:
        for side in ("source", "target"):
            cluster = as_root[side]
            for gone in (role, dropped):
                if gone in {r.role_name for r in utility.list_roles(False, using=cluster).groups}:
                    r = Role(gone, using=cluster)
                    for g in r.list_grants().groups:
                        r.revoke(g.object, g.object_name, g.privilege)
                    for u in r.get_users():
                        r.remove_user(u)
                    r.drop()
            if user in utility.list_usernames(using=cluster):
                utility.delete_user(user, using=cluster)
