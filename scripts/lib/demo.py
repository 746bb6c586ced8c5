"""The demo's sample workload and report: a few collections written on the source, then the rows
each side really holds, read back with pymilvus."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import json  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from pymilvus import DataType, FieldSchema  # noqa: E402

from workload import Cluster, count, create_collection, delete, ensure_loaded, insert, int64_pk, make_rows, schema, varchar_pk  # noqa: E402

COLLECTIONS = {
    "demo_products": schema(int64_pk(), FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=64),
                            FieldSchema("title", DataType.VARCHAR, max_length=64),
                            FieldSchema("price", DataType.FLOAT)),
    "demo_documents": schema(varchar_pk("doc_id"), FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=32),
                             FieldSchema("meta", DataType.JSON)),
}


def env() -> dict:
    lines = (ROOT / ".testbed" / "env").read_text().splitlines()
    return {k: v for k, _, v in (line.partition("=") for line in lines)} | dict(os.environ)


def cdc(e: dict, request_type: str, data: dict | None = None) -> dict:
    """`POST /cdc`; the reply's `data`."""
    body = json.dumps({"request_type": request_type, "request_data": data or {}}).encode()
    req = urllib.request.Request(f"{e['CDC_API']}/cdc", data=body, method="POST")
    return json.loads(urllib.request.urlopen(req, timeout=60).read()).get("data") or {}


def lag(api: str) -> str:
    """The largest `milvus_cdc_lag_seconds` (per vchannel: age of the oldest change not applied
    yet, or of the newest TimeTick when all is applied)."""
    text = urllib.request.urlopen(f"{api}/metrics", timeout=10).read().decode()
    lags = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("milvus_cdc_lag_seconds{")]
    return f"{max(lags):.2f} s behind the source at most" if lags else "not reported yet"


def main() -> None:
    e = env()
    source = Cluster("source", e["SOURCE_MILVUS_URI"]).connect()
    target = Cluster("target", e["TARGET_MILVUS_URI"]).connect()
    # A demo run before this one left its task in the journal: the appliance would refuse a
    # second task over the same collections (409), so the old one goes first.
    for task in cdc(e, "list")["tasks"]:
        if {c["name"] for c in task["collection_infos"]} == set(COLLECTIONS):
            cdc(e, "delete", {"task_id": task["task_id"]})
            print(f"== deleted the previous demo's task {task['task_id']}")
    for name in COLLECTIONS:
        source.drop_collection(name)
        target.drop_collection(name)
    reply = cdc(e, "create", {"milvus_connect_param": {"uri": e["TARGET_MILVUS_URI"], "token": ""},
                              "collection_infos": [{"name": name} for name in COLLECTIONS]})
    print(f"== created replication task {reply['task_id']} for {', '.join(COLLECTIONS)}")
    print("== writing a sample workload on the source")
    for name, s in COLLECTIONS.items():
        create_collection(source, name, s)
        keys = range(10_000) if name == "demo_products" else [f"doc-{i}" for i in range(2_000)]
        insert(source, name, make_rows(s, keys, seed=1))
        delete(source, name, list(keys)[::10])
        print(f"   {name}: inserted {len(keys)} rows, deleted {len(keys[::10])}")

    print("\n== waiting up to 60 s for the target to catch up")
    written = time.monotonic()
    counts = {}
    while time.monotonic() - written < 60:
        counts = {name: (count(ensure_loaded(source, name)),
                         count(ensure_loaded(target, name)) if target.has_collection(name) else 0)
                  for name in COLLECTIONS}
        if all(src == dst for src, dst in counts.values()):
            break
        time.sleep(2)
    caught_up = time.monotonic() - written
    print("\n== report (rows read back with pymilvus on each side)")
    print(f"   {'collection':<16} {'source':>8} {'target':>8}")
    for name, (src, dst) in counts.items():
        print(f"   {name:<16} {src:>8} {dst:>8}")
    if all(src == dst for src, dst in counts.values()):
        print(f"\nTarget equal in row counts {caught_up:.0f} s after the last write (checked by polling every 2 s).")
        print(f"The task's lag now, from {e['CDC_API']}/metrics: {lag(e['CDC_API'])}")
    else:
        print("\nThe target did NOT catch up within 60 s; see .testbed/cdc.log.")
        sys.exit(1)


if __name__ == "__main__":
    main()
