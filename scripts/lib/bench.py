"""Replication benchmark against the real testbed, in one run:

1. throughput: N rows (int64 pk, 128-dim vectors) written on the source first, then a task started
   at `earliest` replicates the backlog; rows/s = N / (time until the target acknowledged all N
   rows, from the appliance's counters; the time until a query shows them is reported beside);
2. lag: with the task running, batches written on the source one by one; lag = time from the
   source's insert reply to the batch's last row being visible on the target (p50, p99);
3. ceiling: the same N rows inserted straight into the target by our own Rust client
   (benches/target_ceiling.rs) with the same batch size;
4. memory: the appliance's RSS while a backlog of M rows sits in its journal (target unreachable).

Prints a report; exits non-zero only if something failed, never on a figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from pymilvus import DataType, FieldSchema  # noqa: E402

from cdc import CdcServer  # noqa: E402
import cdc as cdc_module  # noqa: E402
from workload import Cluster, count, create_collection, ensure_loaded, insert, int64_pk, make_rows, schema  # noqa: E402

SCHEMA = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=128))


def env() -> dict:
    lines = (ROOT / ".testbed" / "env").read_text().splitlines()
    return {k: v for k, _, v in (line.partition("=") for line in lines)}


def rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    return values["VmRSS"] / 1024, values["VmHWM"] / 1024


def write(source: Cluster, name: str, start: int, rows: int, batch: int) -> None:
    for lo in range(start, start + rows, batch):
        insert(source, name, make_rows(SCHEMA, range(lo, min(lo + batch, start + rows)), seed=lo), batch=batch)


def wait_count(cluster: Cluster, name: str, want: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cluster.has_collection(name):
            if count(ensure_loaded(cluster, name)) >= want:
                return time.monotonic()
        time.sleep(0.5)
    raise TimeoutError(f"{name} on {cluster.name} did not reach {want} rows in {timeout:.0f}s")


def visible(cluster: Cluster, name: str, pk: int) -> bool:
    coll = cluster.collection(name)
    return bool(coll.query(f"id == {pk}", output_fields=["id"], consistency_level="Strong"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--lag-batches", type=int, default=40)
    parser.add_argument("--lag-batch", type=int, default=1_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    args = parser.parse_args()
    cdc_module.BINARY = ROOT / "target" / "release" / "milvus-cdc"
    e = env()
    source = Cluster("source", e["SOURCE_MILVUS_URI"]).connect()
    target = Cluster("target", e["TARGET_MILVUS_URI"]).connect()
    stamp = int(time.time())
    name, ceiling = f"bench_{stamp}", f"bench_ceiling_{stamp}"
    report = {}
    work = Path(tempfile.mkdtemp(prefix="cdc-bench-"))

    # 1. throughput over a backlog
    create_collection(source, name, SCHEMA, shards=2, consistency_level="Bounded")
    t0 = time.monotonic()
    write(source, name, 0, args.rows, args.batch)
    report["source_write_rows_per_s"] = args.rows / (time.monotonic() - t0)
    (work / "replication").mkdir()
    server = CdcServer(work / "replication", e).start()
    started = time.monotonic()
    status, reply = server.post("create", {"milvus_connect_param": {"uri": e["TARGET_MILVUS_URI"]},
                                           "collection_infos": [{"name": name}], "start_position": "earliest"})
    assert status == 200, reply
    # Which side limits throughput: when the reader has staged every insert, and when the
    # applier has sent every row, from the appliance's own counters.
    marks = {}

    def watch():
        while "applied" not in marks and server.proc.poll() is None:
            m = server.metrics()
            now = time.monotonic() - started
            if m.get("milvus_cdc_rows_applied_total", 0) >= args.rows:
                marks["applied"] = now
            staged = m.get("milvus_cdc_changes_staged_total", 0)
            if staged != marks.get("last_staged"):
                marks["last_staged"], marks["staged_at"] = staged, now
            time.sleep(0.1)

    # Measured like the ceiling: rows acknowledged by the target, with nothing querying it
    # meanwhile (loading a collection makes the target do extra work while it ingests).
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    watcher.join(timeout=900)
    if "applied" not in marks:
        raise TimeoutError("the appliance did not apply the backlog within 900 s")
    report["replication_rows_per_s"] = args.rows / marks["applied"]
    # The last time the staged count grew: the reader had the whole backlog then.
    report["reader_staged_all_after_s"] = marks.get("staged_at")
    report["applier_sent_all_after_s"] = marks["applied"]
    done = wait_count(target, name, args.rows, timeout=300)
    report["target_showed_all_after_s"] = done - started
    report["appliance_rss_mb_after_throughput"] = rss_mb(server.proc.pid)

    # 2. lag, live
    lags = []
    base = args.rows
    for i in range(args.lag_batches):
        lo = base + i * args.lag_batch
        insert(source, name, make_rows(SCHEMA, range(lo, lo + args.lag_batch), seed=lo), batch=args.lag_batch)
        written = time.monotonic()
        last = lo + args.lag_batch - 1
        while not visible(target, name, last):
            if time.monotonic() - written > 120:
                raise TimeoutError(f"row {last} not visible on the target after 120 s")
            time.sleep(0.02)
        lags.append(time.monotonic() - written)
    report["lag_p50_s"] = statistics.median(lags)
    report["lag_p99_s"] = statistics.quantiles(lags, n=100)[98] if len(lags) >= 2 else lags[0]
    server.stop()

    # 3. ceiling: the same rows straight into the target, same batch size, our Rust client
    create_collection(target, ceiling, SCHEMA, shards=2, consistency_level="Bounded")
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "target_ceiling", "--",
         e["TARGET_MILVUS_URI"], ceiling, str(args.rows), str(args.batch)],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    report["ceiling_rows_per_s"] = json.loads(out.strip().splitlines()[-1])["rows_per_s"]
    report["ratio"] = report["replication_rows_per_s"] / report["ceiling_rows_per_s"]
    target.drop_collection(ceiling)

    # 4. memory with a backlog held in the journal: the target is unreachable, so nothing drains
    if args.backlog:
        backlog = f"bench_backlog_{stamp}"
        (work / "backlog").mkdir()
        server = CdcServer(work / "backlog", e).start()
        server.create_task("http://127.0.0.1:9", collections=(backlog,))
        create_collection(source, backlog, SCHEMA, shards=2, consistency_level="Bounded")
        peak = [0.0]

        def sample():
            while server.proc.poll() is None:
                peak[0] = max(peak[0], rss_mb(server.proc.pid)[0])
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        write(source, backlog, 0, args.backlog, 10_000)
        time.sleep(10)
        report["backlog_rows"] = args.backlog
        report["appliance_rss_mb_with_backlog"] = rss_mb(server.proc.pid)[0]
        report["appliance_peak_rss_mb_during_backlog"] = peak[0]
        server.stop()
        staged = subprocess.run([str(cdc_module.BINARY), "dump", "--data-dir", str(work / "backlog" / "data"),
                                 "--max-rows", "100000000"], capture_output=True, text=True).stdout
        report["backlog_rows_in_journal"] = sum(int(line.rsplit("rows=", 1)[1]) for line in staged.splitlines()
                                                if line.startswith("row ") and " insert " in line)
        source.drop_collection(backlog)

    source.drop_collection(name)
    target.drop_collection(name)
    print("\n== replication bench (figures from one run on this machine)")
    for key, value in report.items():
        print(f"   {key:<40} {value if not isinstance(value, float) else round(value, 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
