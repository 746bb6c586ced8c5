"""Workload library for the end-to-end tests: create collections on a Milvus, write rows to them,
and check that a target Milvus holds exactly what a source Milvus holds.

Rows are generated deterministically from a seed, so a failing run can be replayed.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, MilvusException, connections, db, utility

VECTOR_TYPES = (DataType.FLOAT_VECTOR, DataType.BINARY_VECTOR)
FLOAT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Cluster:
    """One Milvus, reached through its own pymilvus connection alias."""

    name: str
    uri: str
    db: str = "default"

    def connect(self) -> "Cluster":
        connections.connect(alias=self.name, uri=self.uri, db_name=self.db)
        return self

    def database(self, db: str) -> "Cluster":
        """The same Milvus, through a connection that uses database `db`."""
        return Cluster(f"{self.name}/{db}", self.uri, db).connect()

    def collection(self, name: str) -> Collection:
        return Collection(name, using=self.name)

    def has_collection(self, name: str) -> bool:
        return utility.has_collection(name, using=self.name)

    def drop_collection(self, name: str) -> None:
        if self.has_collection(name):
            utility.drop_collection(name, using=self.name)


def index_summary(cluster: Cluster, name: str) -> list[dict]:
    """The collection's indexes as comparable values: field, name, type, metric and build
    params (a JSON string on the wire, parsed here so key order does not matter)."""
    summary = []
    for idx in cluster.collection(name).indexes:
        params = dict(idx.params)
        build = params.get("params", {})
        if isinstance(build, str):
            build = json.loads(build) if build else {}
        summary.append({"field": idx.field_name, "name": idx.index_name,
                        "type": params.get("index_type"), "metric": params.get("metric_type"),
                        "params": {k: str(v) for k, v in build.items()}})
    return sorted(summary, key=lambda i: (i["field"], i["name"]))


def load_state(cluster: Cluster, name: str) -> str:
    """`Loaded`, `Loading`, `NotLoad` or `NotExist`."""
    return utility.load_state(name, using=cluster.name).name


def wait_until(what: str, check, timeout: float = 120.0, interval: float = 1.0) -> None:
    """Polls `check()` (a list of problems, empty when done) until it is empty."""
    deadline = time.monotonic() + timeout
    while True:
        problems = check()
        if not problems:
            return
        if time.monotonic() > deadline:
            raise NotReplicated(f"{what} after {timeout:.0f}s:\n  " + "\n  ".join(map(str, problems)))
        time.sleep(interval)


def replicated_database(target: Cluster, name: str, timeout: float = 60) -> Cluster:
    """The target's connection to database `name`, once replication has created it there."""
    deadline = time.monotonic() + timeout
    while name not in db.list_database(using=target.name):
        if time.monotonic() > deadline:
            raise NotReplicated(f"database {name} not created on {target.name} after {timeout:.0f}s")
        time.sleep(0.5)
    return target.database(name)


def drop_database(clusters: Iterable[Cluster], name: str) -> None:
    """Drops database `name` with its collections wherever it exists."""
    for cluster in clusters:
        if name in db.list_database(using=cluster.name):
            inside = cluster.database(name)
            for coll in utility.list_collections(using=inside.name):
                inside.drop_collection(coll)
            db.drop_database(name, using=cluster.name)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------------------------------------
# schemas


def schema(*fields: FieldSchema, description: str = "", dynamic: bool = False) -> CollectionSchema:
    return CollectionSchema(list(fields), description=description, enable_dynamic_field=dynamic)


def int64_pk(name: str = "id", auto_id: bool = False) -> FieldSchema:
    return FieldSchema(name, DataType.INT64, is_primary=True, auto_id=auto_id)


def varchar_pk(name: str = "pk", max_length: int = 64) -> FieldSchema:
    return FieldSchema(name, DataType.VARCHAR, is_primary=True, max_length=max_length)


def create_collection(cluster: Cluster, name: str, collection_schema: CollectionSchema,
                      shards: int = 2, consistency_level: str = "Strong") -> Collection:
    return Collection(name, collection_schema, using=cluster.name, shards_num=shards,
                      consistency_level=consistency_level)


# ---------------------------------------------------------------------------------------------
# rows


def make_rows(collection_schema: CollectionSchema, keys: Iterable[Any], seed: int) -> list[dict]:
    """Rows for the given primary keys with every other field filled from `seed`.
    Auto-id primary keys are left out (Milvus assigns them)."""
    keys = list(keys)
    rng = np.random.default_rng(seed)
    n = len(keys)
    columns: dict[str, list] = {}
    for f in collection_schema.fields:
        if f.is_primary:
            if not f.auto_id:
                columns[f.name] = keys
            continue
        columns[f.name] = column_values(f, n, rng, keys)
    if collection_schema.enable_dynamic_field:
        columns["extra"] = [f"dyn-{k}" for k in keys]
    names = list(columns)
    return [{name: columns[name][i] for name in names} for i in range(n)]


def column_values(f: FieldSchema, n: int, rng: np.random.Generator, keys: list) -> list:
    t = f.dtype
    if t == DataType.BOOL:
        return [bool(x) for x in rng.integers(0, 2, n)]
    if t in (DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64):
        bits = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64}[t]
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return [int(x) for x in rng.integers(lo, hi, n, endpoint=True, dtype=np.int64)]
    if t == DataType.FLOAT:
        return [float(x) for x in rng.standard_normal(n, dtype=np.float32)]
    if t == DataType.DOUBLE:
        return [float(x) for x in rng.standard_normal(n)]
    if t == DataType.VARCHAR:
        max_len = int(f.params.get("max_length", 64))
        lengths = rng.integers(0, max_len // 2 + 1, n)
        return [(f"{k}:" + "x" * int(m))[:max_len] for k, m in zip(keys, lengths)]
    if t == DataType.JSON:
        values = rng.integers(0, 1000, n)
        return [{"k": str(k), "n": int(v), "tags": ["a", int(v) % 7]} for k, v in zip(keys, values)]
    if t == DataType.FLOAT_VECTOR:
        dim = int(f.params["dim"])
        return [list(map(float, row)) for row in rng.random((n, dim), dtype=np.float32)]
    if t == DataType.BINARY_VECTOR:
        dim = int(f.params["dim"])
        return [bytes(row) for row in rng.integers(0, 256, (n, dim // 8), dtype=np.uint8)]
    if t == DataType.ARRAY:
        capacity = int(f.params["max_capacity"])
        lengths = rng.integers(0, capacity + 1, n)
        if f.element_type == DataType.VARCHAR:
            return [[f"{k}-{i}" for i in range(m)] for k, m in zip(keys, lengths)]
        values = rng.integers(-1000, 1000, (n, capacity))
        return [[int(v) for v in row[:m]] for row, m in zip(values, lengths)]
    raise ValueError(f"no generator for field {f.name} of type {t!r}")


def insert(cluster: Cluster, name: str, rows: list[dict], batch: int = 5000,
           partition: str | None = None) -> list:
    """Inserts in batches; returns the primary keys Milvus reports (auto ids included)."""
    coll = cluster.collection(name)
    keys: list = []
    for start in range(0, len(rows), batch):
        result = coll.insert(rows[start:start + batch], partition_name=partition)
        keys.extend(result.primary_keys)
    return keys


def delete(cluster: Cluster, name: str, keys: list, batch: int = 1000, partition: str | None = None) -> None:
    coll = cluster.collection(name)
    for start in range(0, len(keys), batch):
        coll.delete(pk_in_expr(coll, keys[start:start + batch]), partition_name=partition)


def upsert(cluster: Cluster, name: str, rows: list[dict], batch: int = 5000,
           partition: str | None = None) -> None:
    coll = cluster.collection(name)
    for start in range(0, len(rows), batch):
        coll.upsert(rows[start:start + batch], partition_name=partition)


def pk_in_expr(coll: Collection, keys: list) -> str:
    pk = coll.schema.primary_field.name
    return f"{pk} in {[str(k) if isinstance(k, str) else int(k) for k in keys]!r}".replace("'", '"')


# ---------------------------------------------------------------------------------------------
# comparing two clusters


class NotReplicated(AssertionError):
    pass


def ensure_loaded(cluster: Cluster, name: str) -> Collection:
    """Loads the collection for querying. A vector field without an index gets a FLAT index
    named `e2e_check`, because Milvus 2.3 cannot load a collection without one."""
    coll = cluster.collection(name)
    indexed = {idx.field_name for idx in coll.indexes}
    for f in coll.schema.fields:
        if f.dtype in VECTOR_TYPES and f.name not in indexed:
            metric = "HAMMING" if f.dtype == DataType.BINARY_VECTOR else "L2"
            index_type = "BIN_FLAT" if f.dtype == DataType.BINARY_VECTOR else "FLAT"
            coll.create_index(f.name, {"index_type": index_type, "metric_type": metric, "params": {}},
                              index_name="e2e_check")
    coll.load()
    return coll


def schema_summary(coll: Collection, ignore_auto_id: bool) -> dict:
    fields = []
    for f in coll.schema.fields:
        fields.append({
            "name": f.name, "type": f.dtype.name, "primary": f.is_primary,
            "auto_id": None if ignore_auto_id else f.auto_id,
            "partition_key": getattr(f, "is_partition_key", False),
            "params": {k: v for k, v in f.params.items() if k in ("dim", "max_length")},
        })
    info = coll.describe()
    return {
        "fields": fields,
        "dynamic": coll.schema.enable_dynamic_field,
        "shards": info.get("num_shards"),
        "consistency_level": info.get("consistency_level"),
    }


def all_rows(coll: Collection) -> dict:
    """Every row by primary key. Query results are reduced by key, so a key stored twice shows
    up once here and only in `count(*)`."""
    pk = coll.schema.primary_field.name
    rows: dict = {}
    iterator = coll.query_iterator(batch_size=4000, expr="", output_fields=["*"],
                                   consistency_level="Strong")
    try:
        while batch := iterator.next():
            for row in batch:
                rows[row[pk]] = row
    finally:
        iterator.close()
    return rows


def count(coll: Collection, partition: str | None = None) -> int:
    return coll.query("", output_fields=["count(*)"], consistency_level="Strong",
                      partition_names=[partition] if partition else None)[0]["count(*)"]


def values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return a == b


def differences(source: Cluster, target: Cluster, name: str, ignore_auto_id: bool,
                target_name: str | None = None) -> list[str]:
    """What differs between the collection on the two clusters (named `target_name` on the
    target when given); empty when they are equal."""
    target_name = target_name or name
    if not target.has_collection(target_name):
        return [f"collection {target_name} missing on {target.name}"]
    src, dst = ensure_loaded(source, name), ensure_loaded(target, target_name)
    problems = []
    src_schema, dst_schema = schema_summary(src, ignore_auto_id), schema_summary(dst, ignore_auto_id)
    if src_schema != dst_schema:
        problems.append(f"schema differs: {source.name}={src_schema} {target.name}={dst_schema}")
    src_parts = sorted(p.name for p in src.partitions)
    dst_parts = sorted(p.name for p in dst.partitions)
    if src_parts != dst_parts:
        problems.append(f"partitions differ: {source.name}={src_parts} {target.name}={dst_parts}")
    partition_key = any(getattr(f, "is_partition_key", False) for f in src.schema.fields)
    if src_parts == dst_parts and len(src_parts) > 1 and not partition_key:
        # Rows must land in the same partition, not only in the collection.
        for part in src_parts:
            src_n, dst_n = count(src, part), count(dst, part)
            if src_n != dst_n:
                problems.append(f"partition {part} holds {src_n} rows on {source.name}, {dst_n} on {target.name}")
    src_count, dst_count = count(src), count(dst)
    if src_count != dst_count:
        problems.append(f"row count differs: {source.name}={src_count} {target.name}={dst_count}")
    src_rows, dst_rows = all_rows(src), all_rows(dst)
    # count(*) counts every stored copy: a count above the distinct keys means a key stored twice.
    for side, rows, total in ((source.name, src_rows, src_count), (target.name, dst_rows, dst_count)):
        if total > len(rows):
            problems.append(f"duplicate primary keys on {side}: count(*)={total}, distinct keys={len(rows)}")
    missing = [k for k in src_rows if k not in dst_rows]
    extra = [k for k in dst_rows if k not in src_rows]
    if missing:
        problems.append(f"{len(missing)} rows missing on {target.name}, e.g. {missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} extra rows on {target.name}, e.g. {extra[:5]}")
    changed = [k for k in src_rows if k in dst_rows and not values_equal(src_rows[k], dst_rows[k])]
    if changed:
        k = changed[0]
        problems.append(f"{len(changed)} rows differ, e.g. pk {k!r}: {source.name}={src_rows[k]} "
                        f"{target.name}={dst_rows[k]}")
    return problems


def assert_replicated(source: Cluster, target: Cluster, name: str, timeout: float = 120.0,
                      ignore_auto_id: bool = True, target_name: str | None = None) -> None:
    """Waits up to `timeout` seconds for the target to hold exactly the source's collection:
    schema, partitions, row count and every row by primary key (vectors and floats within 1e-6).

    `ignore_auto_id`: the target keeps the source's ids, so it may create an auto-id collection
    with auto id off; the flag is then not compared. A read the target refuses while it is still
    catching up (a collection dropped and made again under the reader) is a difference, retried
    until the deadline as any other."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            problems = differences(source, target, name, ignore_auto_id, target_name)
        except MilvusException as err:
            problems = [f"comparing failed: {err}"]
        if not problems:
            return
        if time.monotonic() > deadline:
            raise NotReplicated(f"{name} not replicated after {timeout:.0f}s:\n  " + "\n  ".join(problems))
        time.sleep(2)
