"""The `--scale` section of scripts/bench: how replication holds up at scale. Each figure is
printed next to what it is compared to, measured in the same run:

1. many collections: N collections (1,000 rows each, int64 pk, 128-dim vectors, 1 or 2 shards)
   spread over 3 databases, created and written on the source (one every `--scale-pace`
   seconds, at both counts) while a task over every collection of every database (`*`) runs: the time from the first create until the target
   acknowledged all their rows (next to the source's own time to create and write them), and
   the appliance's CPU seconds per collection, and its cores busy once all are applied and
   nothing is written; at N/10 and at N, and their ratio (above 1.5, the per-collection cost
   grows worse than linearly);
2. 768-dim vectors: the catch-up and from-create rates and the snapshot copy's rate, each next
   to the ceiling of the same 768-dim rows (as sections 1, 2 and 4 of bench.py);
3. a large backlog: M rows held in the journal while the target is unreachable, then drained
   (bench.py's `backlog_memory`): the journal's size on disk, the peak RSS, the drain rate next
   to the ceiling of the same rows, and the time until the task's consistency point is within
   1 s of the source;
4. four tasks, each over its own collection (2 shards) of R rows written and flushed on the
   source while the tasks are paused, then resumed together: total rows/s until the target
   acknowledged all 4R rows, next to the ceiling of 4R rows in one stream and in four.

They run in the order 1, 2, 4, 3 (the largest last), the testbed restarted between them. Every
wait has a deadline; each part drops what it created on both sides, and stops its appliances
even when it fails.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pymilvus import DataType, FieldSchema, MilvusException, db, utility

import bench
from workload import (Cluster, NotReplicated, assert_replicated, create_collection, drop_database, insert,
                      int64_pk, make_rows, replicated_database, schema, wait_until)

WIDE = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=768))
EVERYTHING = {"collection_infos": [{"name": "*"}]}  # every collection of every database


def add_flags(parser) -> None:
    parser.add_argument("--scale", action="store_true",
                        help="run only the scale section (as with --repeat 0 --lag-batches 0 --backlog 0 "
                             "--snapshot-rows 0 --takeovers 0); each --scale-* of 0 skips its part")
    parser.add_argument("--scale-collections", type=int, default=300, help="collections (and a tenth of them)")
    parser.add_argument("--scale-pace", type=float, default=0.4,
                        help="seconds from one collection's create to the next's, at both counts: the source "
                             "slows as it holds more collections, and an appliance's cost per second would "
                             "otherwise show as a cost per collection")
    parser.add_argument("--scale-dim-rows", type=int, default=50_000, help="rows of 768-dim vectors")
    parser.add_argument("--scale-backlog", type=int, default=5_000_000, help="rows held in the journal")
    parser.add_argument("--scale-task-rows", type=int, default=100_000, help="rows per task of four")


def scale(args, source: Cluster, target: Cluster, e: dict, work: Path, fresh) -> dict:
    """The parts whose size is not 0; `fresh()` (a testbed restart) runs before each but the first."""
    apply = bench.apply_settings(args)
    parts = [
        (args.scale_collections, lambda: collections_growth(source, target, e, work / "collections",
                                                            args.scale_collections, args.scale_pace)),
        (args.scale_dim_rows, lambda: wide_vectors(source, target, e, work / "wide", args.scale_dim_rows,
                                                   args.batch, apply)),
        (args.scale_task_rows, lambda: four_tasks(source, target, e, work / "tasks", args.scale_task_rows,
                                                  args.batch, apply)),
        (args.scale_backlog, lambda: large_backlog(source, target, e, work / "backlog", args.scale_backlog,
                                                   args.batch, apply)),
    ]
    report, first = {}, True
    for size, part in parts:
        if size:
            if not first:
                fresh()
            first = False
            report.update(guarded(source, target, part))
    return report


def guarded(source: Cluster, target: Cluster, part) -> dict:
    """Runs `part`; whatever way it ends, stops the appliances it started and drops the bench
    collections it left in the default database on either side."""
    before = {c.name: set(utility.list_collections(using=c.name)) for c in (source, target)}
    try:
        return part()
    finally:
        while bench.STARTED:
            bench.STARTED.pop().stop()
        try:
            for c in (source, target):
                for name in set(utility.list_collections(using=c.name)) - before[c.name]:
                    if name.startswith("bench_"):
                        c.drop_collection(name)
        except MilvusException as err:  # not to hide why the part failed
            print(f"scale: could not drop the part's collections: {err}", flush=True)


# ---------------------------------------------------------------------------------------------
# 1. many collections


def collections_growth(source: Cluster, target: Cluster, e: dict, work: Path, n: int, pace: float,
                       scope=lambda dbs: EVERYTHING) -> dict:
    """Part 1 at n/10 and at n collections."""
    report = {}
    for count in (max(n // 10, 1), n):
        run = many_collections(source, target, e, work, count, scope, pace)
        report.update({f"scale_{count}_collections_{key}": value for key, value in run.items()})
        print(f"scale, {count} collections: all on the target after {run['until_equal_s']:.1f} s "
              f"(the source took {run['source_write_s']:.1f} s to create and write them, ratio "
              f"{run['source_to_target_ratio']:.2f}), appliance cpu {run['cpu_s_per_collection']:.3f} s "
              f"per collection, {run['idle_cpu_per_s']:.3f} cores once idle", flush=True)
    small, large = max(n // 10, 1), n
    for key in ("cpu_s_per_collection", "until_equal_s_per_collection"):
        ratio = report[f"scale_{large}_collections_{key}"] / report[f"scale_{small}_collections_{key}"]
        report[f"scale_collections_{key}_ratio_{large}_to_{small}"] = ratio
    print(f"scale: cpu per collection at {large} / at {small}: "
          f"{report[f'scale_collections_cpu_s_per_collection_ratio_{large}_to_{small}']:.2f} "
          "(above 1.5: worse than linear)", flush=True)
    return report


def many_collections(source: Cluster, target: Cluster, e: dict, work: Path, n: int, scope, pace: float,
                     rows: int = 1_000) -> dict:
    """n collections over 3 databases, created and written while a task of `scope(databases)`
    runs, one every `pace` seconds (or as fast as the source takes them, if slower); timed until
    the appliance's last acknowledgment of their n * rows rows."""
    stamp = time.time_ns()
    dbs = [f"bench_scale_{stamp}_{i}" for i in range(3)]
    names = [(dbs[i % 3], f"c{i}") for i in range(n)]
    work.mkdir(parents=True, exist_ok=True)
    server = bench.appliance(work / f"{n}-{stamp}", e, {})
    try:
        status, reply = server.post("create", {"milvus_connect_param": {"uri": e["TARGET_MILVUS_URI"]},
                                               "start_position": "latest", **scope(dbs)})
        assert status == 200 and reply["code"] == 200, reply
        bench.settle(bench.part_pids())
        pid = server.proc.pid
        cpu_before, started, started_wall = bench.cpu_seconds(pid), time.monotonic(), time.time()
        sources = {}
        for d in dbs:
            db.create_database(d, using=source.name)
            sources[d] = source.database(d)
        for i, (d, name) in enumerate(names):
            time.sleep(max(0.0, started + i * pace - time.monotonic()))
            create_collection(sources[d], name, bench.SCHEMA, shards=1 + i % 2, consistency_level="Bounded")
            insert(sources[d], name, make_rows(bench.SCHEMA, range(rows), seed=i), batch=rows)
        written = time.monotonic() - started
        acknowledged = wait_applied(server, n * rows, started_wall, timeout=300 + 5 * n)
        cpu = bench.cpu_seconds(pid) - cpu_before
        idle = idle_cpu_per_s(pid)
        server.stop()
        check_counts(sources, {d: replicated_database(target, d) for d in dbs}, names, rows)
        return {"until_equal_s": acknowledged, "until_equal_s_per_collection": acknowledged / n,
                "source_write_s": written, "source_to_target_ratio": written / acknowledged,
                "cpu_s": cpu, "cpu_s_per_collection": cpu / n, "idle_cpu_per_s": idle}
    finally:
        server.stop()
        for d in dbs:
            drop_database((source, target), d)


def idle_cpu_per_s(pid: int, seconds: float = 10) -> float:
    """The appliance's CPU seconds per second once nothing is written: what it spends on the
    collections' time ticks and its own upkeep. Growing with the collections, it would make the
    CPU per collection grow with the time the run takes."""
    before = bench.cpu_seconds(pid)
    time.sleep(seconds)
    return (bench.cpu_seconds(pid) - before) / seconds


def wait_applied(server, rows: int, started_wall: float, timeout: float) -> float:
    """Seconds from `started_wall` to the appliance's last acknowledgment, once the target
    acknowledged `rows` rows in all."""
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        if m.get("milvus_cdc_rows_applied_total", 0) >= rows:
            return m["milvus_cdc_last_applied_seconds"] - started_wall
        if server.proc.poll() is not None:
            raise RuntimeError(f"the appliance exited; see {server.log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{m.get('milvus_cdc_rows_applied_total', 0):.0f} of {rows} rows applied "
                               f"after {timeout:.0f} s; see {server.log}")
        time.sleep(0.5)


def check_counts(sources: dict[str, Cluster], targets: dict[str, Cluster], names: list[tuple[str, str]],
                 rows: int, sample: int = 3) -> None:
    """Every collection holds `rows` rows on the target; `sample` of them are compared row by row."""
    def flushed(where: tuple[str, str]) -> str | None:
        coll = targets[where[0]].collection(where[1])
        coll.flush(timeout=120)
        return None if coll.num_entities == rows else f"{where}: {coll.num_entities} rows on the target, not {rows}"

    with ThreadPoolExecutor(8) as pool:
        problems = [p for p in pool.map(flushed, names) if p]
    if problems:
        raise NotReplicated(f"{len(problems)} collections differ:\n  " + "\n  ".join(problems[:10]))
    for d, name in names[::max(len(names) // sample, 1)][:sample]:
        assert_replicated(sources[d], targets[d], name, timeout=120)


# ---------------------------------------------------------------------------------------------
# 2. 768-dim vectors


def wide_vectors(source: Cluster, target: Cluster, e: dict, work: Path, rows: int, batch: int,
                 apply: dict[str, int]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    same = bench.rows_file(work / "rows-768.bin", rows, batch, WIDE)
    bench.ceiling(target, e, same, batch, schema=WIDE)  # warm-up, untimed
    run = bench.replicate_backlog(source, target, e, work, rows, batch, apply, WIDE)
    rate, _ = bench.ceiling(target, e, same, batch, schema=WIDE)
    report = {"scale_768_dim_rows": rows, "scale_768_dim_ceiling_rows_per_s": rate}
    for mode in ("catch_up", "from_create"):
        report[f"scale_768_dim_{mode}_rows_per_s"] = run[mode]["rows_per_s"]
        report[f"scale_768_dim_{mode}_ratio"] = run[mode]["rows_per_s"] / rate
    print(f"scale, 768 dims: catch-up {run['catch_up']['rows_per_s']:.0f} rows/s, from create "
          f"{run['from_create']['rows_per_s']:.0f} rows/s, ceiling {rate:.0f} rows/s "
          f"(ratio {report['scale_768_dim_catch_up_ratio']:.2f})", flush=True)
    snapshot = bench.snapshot_copy(source, target, e, work / "snapshot", rows, batch, WIDE)
    report.update({f"scale_768_dim_{key}": value for key, value in snapshot.items()})
    print(f"scale, 768 dims: snapshot copy {snapshot['snapshot_copy_rows_per_s']:.0f} rows/s, ceiling "
          f"{snapshot['snapshot_ceiling_rows_per_s']:.0f} rows/s (ratio {snapshot['snapshot_copy_ratio']:.2f})",
          flush=True)
    return report


# ---------------------------------------------------------------------------------------------
# 3. a large backlog


def large_backlog(source: Cluster, target: Cluster, e: dict, work: Path, rows: int, batch: int,
                  apply: dict[str, int]) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    # The whole backlog in the journal: the default cap (1 GiB per task) would leave the rest in
    # the broker until the target is back.
    journal = f"[journal]\nmax_bytes = {max(1 << 30, rows * 2048)}\n"
    run = bench.backlog_memory(source, target, e, work / "appliance", f"bench_scale_backlog_{time.time_ns()}",
                               rows, apply, on_drained=until_consistent, extra_config=journal)
    shutil.rmtree(work / "appliance", ignore_errors=True)  # the journal: as large as the backlog
    same = bench.rows_file(work / "backlog-rows.bin", rows, 10_000)  # the rows backlog_memory wrote
    try:
        rate, _ = bench.ceiling(target, e, same, batch)  # the target is warm from the drain
    finally:
        same.unlink()
    drain = run["backlog_rows_in_journal"] / run["backlog_drained_after_s"]
    report = {f"scale_{key}": value for key, value in run.items()}
    report.update({"scale_backlog_drain_rows_per_s": drain, "scale_backlog_ceiling_rows_per_s": rate,
                   "scale_backlog_drain_ratio": drain / rate})
    print(f"scale, a backlog of {rows} rows: journal {run['backlog_journal_on_disk_mb']:.0f} MB on disk, peak RSS "
          f"{run['appliance_peak_rss_mb_while_draining']:.0f} MB draining, drained at {drain:.0f} rows/s, "
          f"ceiling {rate:.0f} rows/s (ratio {drain / rate:.2f}), consistent within 1 s of the source after "
          f"{run['backlog_consistent_within_1s_after_s']:.1f} s", flush=True)
    return report


def until_consistent(server, task: str, started: float, within: float = 1.0, timeout: float = 300) -> dict:
    """Seconds from `started` until the task's consistency point is within `within` seconds of
    the source (its `rpo_seconds`: now minus the point)."""
    seen = None

    def point() -> list:
        nonlocal seen
        status, view = server.request("GET", f"/v1/tasks/{task}")
        seen = view.get("consistent_through") if status == 200 else view
        return [] if seen and seen.get("rpo_seconds", within + 1) <= within else [f"consistent through {seen}"]

    wait_until(f"task {task} consistent within {within} s of the source", point, timeout=timeout, interval=0.2)
    return {"backlog_consistent_within_1s_after_s": time.monotonic() - started}


# ---------------------------------------------------------------------------------------------
# 4. four tasks


def four_tasks(source: Cluster, target: Cluster, e: dict, work: Path, rows: int, batch: int,
               apply: dict[str, int], tasks: int = 4) -> dict:
    """`tasks` paused tasks, one per collection of `rows` rows, resumed together."""
    stamp = time.time_ns()
    names = [f"bench_scale_task{i}_{stamp}" for i in range(tasks)]
    work.mkdir(parents=True, exist_ok=True)
    # Collection i holds keys i*rows.. from the same batches as this file: the same rows in all.
    same = bench.rows_file(work / "tasks-rows.bin", tasks * rows, batch)
    bench.ceiling(target, e, same, batch)  # warm-up, untimed
    pids = bench.part_pids()
    server = bench.appliance(work / f"appliance-{stamp}", e, apply)
    try:
        for name in names:
            create_collection(source, name, bench.SCHEMA, shards=2, consistency_level="Bounded")
        ids = [server.create_task(e["TARGET_MILVUS_URI"], collections=(name,)) for name in names]
        wait_until("the tasks' collections on the target",
                   lambda: [n for n in names if not target.has_collection(n)], timeout=60, interval=0.2)
        for task in ids:
            assert server.post("pause", {"task_id": task})[0] == 200, f"task {task} did not pause"
        for i, name in enumerate(names):
            bench.write(source, name, i * rows, rows, batch)
            source.collection(name).flush()
        bench.settle(pids)

        def resume_all() -> None:
            for task in ids:
                assert server.post("resume", {"task_id": task})[0] == 200, f"task {task} did not resume"

        run = bench.measure(server, pids, tasks * rows, resume_all)
        check_counts({"default": source}, {"default": target}, [("default", n) for n in names], rows, sample=1)
        one, _ = bench.ceiling(target, e, same, batch)
        side_by_side, _ = bench.ceiling(target, e, same, batch, streams=tasks)
    finally:
        server.stop()
        for name in names:
            source.drop_collection(name)
            target.drop_collection(name)
    rate = run["rows_per_s"]
    print(f"scale, {tasks} tasks of {rows} rows: {rate:.0f} rows/s in all, ceiling {one:.0f} rows/s in one "
          f"stream (ratio {rate / one:.2f}), {side_by_side:.0f} in {tasks} (ratio {rate / side_by_side:.2f})",
          flush=True)
    return {f"scale_{tasks}_tasks_rows_per_s": rate, f"scale_{tasks}_tasks_ceiling_rows_per_s": one,
            f"scale_{tasks}_tasks_ratio": rate / one,
            f"scale_{tasks}_tasks_ceiling_{tasks}_streams_rows_per_s": side_by_side,
            f"scale_{tasks}_tasks_ratio_to_{tasks}_streams": rate / side_by_side,
            f"scale_{tasks}_tasks_appliance_cpu_s": run["cpu_s"]["appliance"]}
