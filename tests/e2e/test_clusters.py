"""Clusters named in the config (`[clusters.NAME]`, and `[source]` as the cluster `source`): a
task names the cluster it reads and the one it writes to, and a task in the opposite direction
over the same collections is refused while its twin runs."""

from pymilvus import DataType, FieldSchema

from cdc import CdcServer
from workload import assert_replicated, create_collection, insert, int64_pk, make_rows, schema

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))


def with_backup_cluster(tmp_path, env) -> CdcServer:
    """The appliance with the testbed's target configured as the cluster `backup`: its API, its
    etcd root, and its channels on the testbed's Kafka."""
    backup = (
        "[clusters.backup]\n"
        f'etcd_endpoints = ["{env.get("ETCD_ENDPOINTS", "127.0.0.1:2379")}"]\n'
        f'etcd_root_path = "{env.get("TARGET_ETCD_ROOT", "dr")}"\n'
        f'channel_prefix = "{env.get("TARGET_CHANNEL_PREFIX", "dr")}"\n'
        f'milvus_uri = "{env["TARGET_MILVUS_URI"]}"\n'
        "[clusters.backup.mq]\n"
        'type = "kafka"\n'
        f'brokers = "{env.get("KAFKA_BROKERS", "127.0.0.1:9092")}"\n'
    )
    return CdcServer(tmp_path, env, extra_config=backup).start()


def test_a_task_written_to_a_named_cluster_replicates_and_its_twin_the_other_way_is_refused(
        tmp_path, env, source, target, names):
    server = with_backup_cluster(tmp_path, env)
    try:
        name = names("clustered")
        status, task = server.request("POST", "/v1/tasks", {
            "task_id": "forth", "target_cluster": "backup", "collection_infos": [{"name": name}]})
        assert status == 201, task
        assert task["target_cluster"] == "backup" and "source_cluster" not in task, task
        assert task["milvus_connect_param"] == {"uri": target.uri, "token": ""}, task
        create_collection(source, name, SMALL, shards=2)
        insert(source, name, make_rows(SMALL, range(300), seed=3))
        assert_replicated(source, target, name, timeout=120)

        back = {"task_id": "back", "source_cluster": "backup", "target_cluster": "source",
                "collection_infos": [{"name": "*"}]}
        status, reply = server.request("POST", "/v1/tasks", back)
        assert status == 409 and "task forth replicates the other way (source to backup)" in reply["message"], reply
        # Named by its uri instead, the source is still the cluster `source`.
        by_uri = {**back, "target_cluster": None, "milvus_connect_param": {"uri": source.uri}}
        status, reply = server.request("POST", "/v1/tasks", by_uri)
        assert status == 409 and "task forth replicates the other way" in reply["message"], reply
        assert [t["task_id"] for t in server.request("GET", "/v1/tasks")[1]["tasks"]] == ["forth"]
    finally:
        server.stop()


def test_the_target_milvus_is_a_source_too(tmp_path, env, source, target, names):
    """The testbed's target has its own channels on the broker: a task reads it as it reads the
    source, here back to the source Milvus."""
    server = with_backup_cluster(tmp_path, env)
    try:
        name = names("backwards")
        status, task = server.request("POST", "/v1/tasks", {
            "task_id": "back", "source_cluster": "backup", "target_cluster": "source",
            "collection_infos": [{"name": name}]})
        assert status == 201 and task["source_cluster"] == "backup", task
        create_collection(target, name, SMALL, shards=2)
        insert(target, name, make_rows(SMALL, range(300), seed=4))
        assert_replicated(target, source, name, timeout=120)
    finally:
        server.stop()


def test_a_cluster_the_config_does_not_name_is_a_bad_request(server, target):
    status, reply = server.request("POST", "/v1/tasks", {
        "source_cluster": "nowhere", "milvus_connect_param": {"uri": target.uri},
        "collection_infos": [{"name": "*"}]})
    assert (status, reply["message"]) == (
        400, 'no cluster "nowhere" in the appliance\'s config ([source] or [clusters.NAME])'), reply
    status, reply = server.request("POST", "/v1/tasks", {
        "target_cluster": "backup", "milvus_connect_param": {"uri": target.uri},
        "collection_infos": [{"name": "*"}]})
    assert (status, reply["message"]) == (400, "give milvus_connect_param or target_cluster, not both"), reply
    status, reply = server.request("POST", "/v1/tasks", {
        "target_cluster": "two words", "collection_infos": [{"name": "*"}]})
    assert status == 400 and reply["message"].startswith("invalid target_cluster"), reply
    assert server.request("GET", "/v1/tasks") == (200, {"tasks": []})
