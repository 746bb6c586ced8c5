"""The installed service replicates (the install test's middle, scripts/lib/package_test.sh):
a task of the service at API copies one new collection of the testbed's source to its target,
checked row by row.

Usage: package_check.py API_URL"""

import json
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from pymilvus import DataType, FieldSchema  # noqa: E402

from conftest import testbed_env  # noqa: E402
from workload import (Cluster, assert_replicated, create_collection, delete, insert, int64_pk,  # noqa: E402
                      make_rows, schema, unique_name, upsert)

ROWS = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=16),
              FieldSchema("title", DataType.VARCHAR, max_length=64), FieldSchema("doc", DataType.JSON))


def create_task(api: str, target_uri: str, name: str) -> str:
    body = json.dumps({"request_type": "create", "request_data": {
        "milvus_connect_param": {"uri": target_uri, "token": ""},
        "collection_infos": [{"name": name}]}}).encode()
    request = urllib.request.Request(f"{api}/cdc", data=body, headers={"content-type": "application/json"})
    reply = json.loads(urllib.request.urlopen(request, timeout=60).read())
    assert reply["code"] == 200, reply
    return reply["data"]["task_id"]


def main(api: str) -> None:
    env = testbed_env()
    source = Cluster("source", env["SOURCE_MILVUS_URI"]).connect()
    target = Cluster("target", env["TARGET_MILVUS_URI"]).connect()
    name = unique_name("package")
    try:
        task = create_task(api, target.uri, name)
        create_collection(source, name, ROWS)
        insert(source, name, make_rows(ROWS, range(3_000), seed=31), batch=1_000)
        delete(source, name, list(range(0, 3_000, 7)))
        upsert(source, name, make_rows(ROWS, range(1, 3_000, 11), seed=32))
        assert_replicated(source, target, name, timeout=180)
        print(f"ok: task {task} replicated {name} to {target.uri}, equal row by row")
    finally:
        for cluster in (source, target):
            cluster.drop_collection(name)


if __name__ == "__main__":
    main(sys.argv[1])
