"""Replication benchmark against the real testbed, in one run:

1. throughput over a backlog of N rows (int64 pk, 128-dim vectors) written and flushed on the
   source, measured twice on the same rows: "catch-up", a paused task (its collection on the
   target already) resumed, rows/s = N / time from the resume request until the target
   acknowledged all N rows; and "from create", a new task started at `earliest`, the task's start
   and the target collection's creation included;
2. the ceiling: the same N rows inserted straight into the target by our own Rust client
   (benches/target_ceiling.rs) with the same batch size, into a collection created beforehand;
   and again in the applier's shape (two calls side by side, one per shard, each as large as
   the applier's calls), which is what the target can take of the calls replication makes.
   Each repeat starts on a freshly started testbed, warmed up by one untimed insert of the same
   rows into the target (a fresh target takes its first bulk slower), and every run starts once
   the testbed is at rest (see `settle`); the CPU seconds each part used are printed per run.
   Runs 1 and 2 are repeated `--repeat` times, in alternating order, and the medians are
   reported, so both see the machine in the same states;
3. lag: with a task running, the source takes a steady load (`--lag-load` of the ceiling
   measured in 1., in a batch every 0.1 s); one batch a second is a sample: lag = time from the
   source's insert reply to the batch's last row being visible on the target (p50, p99), split
   into until visible on the source, until applied and until visible on the target; next to the
   target's own insert-to-visible time under the same load, inserted into it directly;
4. memory: the appliance's RSS while a backlog of M rows sits in its journal (target
   unreachable), and its peak while a restarted appliance drains that backlog to the target;
5. snapshot copy: S rows written, flushed and loaded on the source before any task; a task
   created with `start_position: "snapshot"`, rows/s = S / time from the create request until its
   copy is done, and over the copy alone, next to the ceiling (2.) of the same rows into the same
   target in the same run, and the appliance's peak RSS;
6. takeover: a task's write outage when its owner in a group of three is killed (bench_takeover.py);
7. scale (`--scale`, alone: the other sections are skipped): many collections (300 and 30 over 3
   databases under a `*` task: time until all are on the target and the appliance's CPU seconds
   per collection, and how each grows), 768-dim vectors (catch-up and snapshot copy against
   their ceiling), a large backlog (5,000,000 rows: journal size on disk, peak RSS, drain rate
   against its ceiling, time until consistent within 1 s of the source) and four tasks side by
   side against the ceiling of their rows in one stream and in four (bench_scale.py).

Prints a report; exits non-zero only if something failed, never on a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import numpy as np  # noqa: E402
from pymilvus import DataType, FieldSchema, connections  # noqa: E402

from cdc import CdcServer  # noqa: E402
from relay import TcpRelay  # noqa: E402
from bench_takeover import takeover_outage  # noqa: E402
# bench_scale uses this module's helpers as `bench.x`: the same module when this file runs as a script.
sys.modules.setdefault("bench", sys.modules[__name__])
from bench_scale import add_flags as add_scale_flags, scale  # noqa: E402
import cdc as cdc_module  # noqa: E402
from workload import (Cluster, create_collection, ensure_loaded, insert, int64_pk, load_state, make_rows,  # noqa: E402
                      schema, wait_until)

SCHEMA = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=128))
STAGES = ("plan", "mark", "send", "commit")


def dim(schema=SCHEMA) -> int:
    return next(int(f.params["dim"]) for f in schema.fields if f.dtype == DataType.FLOAT_VECTOR)


def env() -> dict:
    lines = (ROOT / ".testbed" / "env").read_text().splitlines()
    return {k: v for k, _, v in (line.partition("=") for line in lines)}


def rss_mb(pid: int) -> tuple[float, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    return values["VmRSS"] / 1024, values["VmHWM"] / 1024


def part_pids() -> dict[str, int]:
    """The testbed's processes, from `scripts/testbed status`."""
    out = subprocess.run([str(ROOT / "scripts" / "testbed"), "status"], capture_output=True, text=True).stdout
    return {line.split()[0]: int(line.split("pid=")[1].split()[0]) for line in out.splitlines()
            if "pid=" in line and "pid=-" not in line}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_use(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def settle(pids: dict[str, int], timeout: float = 60, idle_cores: float = 0.3) -> None:
    """Waits until the testbed is at rest (a Milvus seals and compacts segments for a while after
    a write), so each measured run starts from the same quiet machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_use(pids)
        time.sleep(1)
        after = cpu_use(pids)
        if sum(after.values()) - sum(before.values()) < idle_cores:
            return


def batches(start: int, rows: int, batch: int, schema=SCHEMA):
    for lo in range(start, start + rows, batch):
        yield make_rows(schema, range(lo, min(lo + batch, start + rows)), seed=lo)


def write(source: Cluster, name: str, start: int, rows: int, batch: int, schema=SCHEMA) -> None:
    for part in batches(start, rows, batch, schema):
        insert(source, name, part, batch=batch)


def rows_file(path: Path, rows: int, batch: int, schema=SCHEMA) -> Path:
    """The rows `write` sends, for the ceiling client: per row the id (i64) and the vector
    (`dim` f32), little endian."""
    with open(path, "wb") as out:
        for part in batches(0, rows, batch, schema):
            ids = np.array([row["id"] for row in part], dtype="<i8")
            vectors = np.array([row["vec"] for row in part], dtype="<f4")
            records = np.zeros(len(part), dtype=[("id", "<i8"), ("vec", "<f4", (dim(schema),))])
            records["id"], records["vec"] = ids, vectors
            out.write(records.tobytes())
    return path


def visible(cluster: Cluster, name: str, pk: int) -> bool:
    coll = cluster.collection(name)
    return bool(coll.query(f"id == {pk}", output_fields=["id"], consistency_level="Strong"))


STARTED: list[CdcServer] = []  # every appliance started here, for bench_scale to stop after a failure


def appliance(work: Path, e: dict, apply: dict[str, int], extra_config: str = "") -> CdcServer:
    """An appliance whose [apply] section holds `apply`'s settings (and `extra_config`'s tables)."""
    work.mkdir()
    server = CdcServer(work, e, extra_config=extra_config)
    if apply:
        server.config.write_text(server.config.read_text() + "[apply]\n"
                                 + "".join(f"{key} = {value}\n" for key, value in apply.items()))
    STARTED.append(server)
    return server.start()


def measure(server: CdcServer, pids: dict[str, int], rows: int, begin) -> dict:
    """Calls `begin` (the request that sets the backlog going) and times it until the target
    acknowledged all `rows`, with nothing querying the target meanwhile. The end is the
    appliance's own record of its latest acknowledgment, so after the first one the counters are
    polled only every 100 ms: polling faster would take CPU from the parts being measured."""
    pids = {**pids, "appliance": server.proc.pid}
    cpu_before = cpu_use(pids)
    started, started_wall = time.monotonic(), time.time()
    begin()
    marks = {}
    while "applied" not in marks:
        if server.proc.poll() is not None or time.monotonic() - started > 900:
            raise RuntimeError(f"the appliance did not apply the backlog; see {server.log}")
        m = server.metrics()
        now = time.monotonic() - started
        applied = m.get("milvus_cdc_rows_applied_total", 0)
        acknowledged = m.get("milvus_cdc_last_applied_seconds", 0) - started_wall
        if applied and "first" not in marks:
            marks["first"], marks["first_rows"] = min(now, acknowledged), applied
        if applied >= rows:
            marks["applied"] = acknowledged
        staged = m.get("milvus_cdc_changes_staged_total", 0)
        if staged != marks.get("last_staged"):
            marks["last_staged"], marks["staged_at"] = staged, now
        time.sleep(0.1 if "first" in marks else 0.02)
    rss = rss_mb(server.proc.pid)
    cpu = {name: seconds - cpu_before[name] for name, seconds in cpu_use(pids).items()}
    m = server.metrics()
    server.stop()
    return {
        "rows_per_s": rows / marks["applied"],
        "first_batch_acknowledged_after_s": marks["first"],
        "reader_staged_all_after_s": marks["staged_at"],
        "applier_sent_all_after_s": marks["applied"],
        "rss_mb": rss,
        "cpu_s": cpu,
        "batches": m.get("milvus_cdc_batches_applied_total", 0),
        # Where the applier's time went: reading the journal, marking, target calls, committing.
        **{f"applier_{stage}_s": m.get(f'milvus_cdc_applier_seconds_total{{stage="{stage}"}}', 0.0)
           for stage in STAGES},
    }


def replicate_backlog(source: Cluster, target: Cluster, e: dict, work: Path, rows: int, batch: int,
                      apply: dict[str, int], schema=SCHEMA) -> dict:
    """One throughput run over a backlog of N rows, measured twice on the same source rows:

    - catch-up: a running task, whose collection is on the target already, is paused while the
      N rows are written and flushed on the source (so it is at rest, as during the ceiling run),
      then resumed: rows/s = N / time from the resume request until the target acknowledged all;
    - from create: a new task started at `earliest` over the same backlog, the target
      collection's creation and the task's start included."""
    name = f"bench_{time.time_ns()}"
    uri = e["TARGET_MILVUS_URI"]
    pids = part_pids()
    create_collection(source, name, schema, shards=2, consistency_level="Bounded")
    server = appliance(work / f"{name}-catch-up", e, apply)
    task = server.create_task(uri, collections=(name,))
    deadline = time.monotonic() + 60
    while not target.has_collection(name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} was not created on the target in 60 s; see {server.log}")
        time.sleep(0.1)
    assert server.post("pause", {"task_id": task})[0] == 200
    write(source, name, 0, rows, batch, schema)
    source.collection(name).flush()
    settle(pids)
    catch_up = measure(server, pids, rows, lambda: server.post("resume", {"task_id": task}))
    target.drop_collection(name)
    settle(pids)
    server = appliance(work / f"{name}-from-create", e, apply)
    from_create = measure(server, pids, rows, lambda: server.post("create", {
        "milvus_connect_param": {"uri": uri}, "collection_infos": [{"name": name}], "start_position": "earliest"}))
    source.drop_collection(name)
    target.drop_collection(name)
    return {"catch_up": catch_up, "from_create": from_create}


def ceiling(target: Cluster, e: dict, rows: Path, batch: int, streams: int = 1,
            schema=SCHEMA) -> tuple[float, dict[str, float]]:
    """The same rows straight into the target, our own Rust client: `batch` rows per call,
    `streams` sequences of calls side by side."""
    name = f"bench_ceiling_{time.time_ns()}"
    create_collection(target, name, schema, shards=2, consistency_level="Bounded")
    pids = part_pids()
    settle(pids)
    cpu_before = cpu_use(pids)
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "target_ceiling", "--",
         e["TARGET_MILVUS_URI"], name, str(rows), str(batch), str(streams), str(dim(schema))],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    cpu = {name: seconds - cpu_before[name] for name, seconds in cpu_use(pids).items()}
    target.drop_collection(name)
    return json.loads(out.strip().splitlines()[-1])["rows_per_s"], cpu


def backlog_memory(source: Cluster, target: Cluster, e: dict, work: Path, name: str, rows: int,
                   apply: dict[str, int], on_drained=None, extra_config: str = "") -> dict:
    """The appliance's RSS with `rows` rows in its journal (and the journal's size), and while a
    restarted appliance drains them to the target. `on_drained(server, task, started)`, when
    given, is called once drained, the appliance still running, and adds to the report."""
    port = cdc_module.free_port()
    server = appliance(work, e, apply, extra_config)
    task = server.create_task(f"http://127.0.0.1:{port}", collections=(name,))
    create_collection(source, name, SCHEMA, shards=2, consistency_level="Bounded")
    peak = [0.0]

    def sample(server: CdcServer):
        while server.proc.poll() is None:
            try:
                peak[0] = max(peak[0], rss_mb(server.proc.pid)[0])
            except (KeyError, FileNotFoundError):  # exiting between the poll and the read
                return
            time.sleep(0.2)

    threading.Thread(target=sample, args=(server,), daemon=True).start()
    write(source, name, 0, rows, 10_000)
    staged_rows = f'milvus_cdc_staged_rows_total{{task="{task}",op="insert"}}'

    def unstaged() -> list:
        staged = server.metrics().get(staged_rows, 0)
        return [] if staged >= rows else [f"{staged:.0f} of {rows} rows staged; see {server.log}"]

    wait_until("the backlog staged in the journal", unstaged, timeout=120 + rows / 10_000)
    report = {"backlog_rows": rows, "appliance_rss_mb_with_backlog": rss_mb(server.proc.pid)[0],
              "appliance_peak_rss_mb_while_staging_backlog": peak[0]}
    server.stop()
    journal = (work / "data" / "journal.redb").stat()
    report["backlog_journal_file_mb"] = journal.st_size / 2**20
    report["backlog_journal_on_disk_mb"] = journal.st_blocks * 512 / 2**20  # what `du` counts
    staged = subprocess.run([str(cdc_module.BINARY), "dump", "--data-dir", str(work / "data"),
                             "--max-rows", "100000000"], capture_output=True, text=True).stdout
    report["backlog_rows_in_journal"] = sum(int(line.rsplit("rows=", 1)[1]) for line in staged.splitlines()
                                            if line.startswith("row ") and " insert " in line)
    server.start()
    peak[0] = 0.0
    threading.Thread(target=sample, args=(server,), daemon=True).start()
    TcpRelay(port, int(e["TARGET_MILVUS_URI"].rsplit(":", 1)[1])).start()
    started = time.monotonic()
    while server.metrics().get("milvus_cdc_rows_applied_total", 0) < report["backlog_rows_in_journal"]:
        if server.proc.poll() is not None or time.monotonic() - started > 1200:
            raise RuntimeError(f"the appliance did not drain the backlog; see {server.log}")
        time.sleep(0.2)
    report["backlog_drained_after_s"] = time.monotonic() - started
    report["appliance_peak_rss_mb_while_draining"] = max(peak[0], rss_mb(server.proc.pid)[1])
    if on_drained:
        report.update(on_drained(server, task, started))
    server.stop()
    drained = target.collection(name)
    drained.flush()
    report["target_rows_after_drain"] = drained.num_entities
    source.drop_collection(name)
    target.drop_collection(name)
    return report


def snapshot_copy(source: Cluster, target: Cluster, e: dict, work: Path, rows: int, batch: int,
                  schema=SCHEMA) -> dict:
    """Section 5: the snapshot copy of `rows` rows, and the ceiling of the same rows."""
    name = f"bench_snapshot_{time.time_ns()}"
    work.mkdir(parents=True, exist_ok=True)
    create_collection(source, name, schema, shards=2, consistency_level="Bounded")
    write(source, name, 0, rows, batch, schema)
    source.collection(name).flush()
    ensure_loaded(source, name)
    same_rows = rows_file(work / "snapshot-rows.bin", rows, batch, schema)
    ceiling(target, e, same_rows, batch, schema=schema)  # warm-up, untimed
    pids = part_pids()
    settle(pids)
    server = appliance(work / name, e, {})
    pids["appliance"] = server.proc.pid
    cpu_before = cpu_use(pids)
    started = time.monotonic()
    status, task = server.request("POST", "/v1/tasks", {
        "milvus_connect_param": {"uri": e["TARGET_MILVUS_URI"]}, "collection_infos": [{"name": name}],
        "start_position": "snapshot"})
    assert status == 201, task
    while True:
        status, view = server.request("GET", f"/v1/tasks/{task['task_id']}")
        if status == 200 and view.get("snapshot") and all(c["done"] for c in view["snapshot"]):
            break
        if time.monotonic() - started > 1800 or server.proc.poll() is not None:
            raise RuntimeError(f"the snapshot copy did not end; see {server.log}")
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    copy_cpu = {part: round(seconds - cpu_before[part], 2) for part, seconds in cpu_use(pids).items()}
    copying = view["snapshot"][0]["rows_per_second"]
    rss = rss_mb(server.proc.pid)
    server.stop()
    del pids["appliance"]
    target.drop_collection(name)
    settle(pids)
    rate, ceiling_cpu = ceiling(target, e, same_rows, batch, schema=schema)
    print(f"snapshot copy: {copying:.0f} rows/s against a ceiling of {rate:.0f} rows/s; cpu seconds, from "
          f"create to copied: {copy_cpu}; ceiling: { {k: round(v, 2) for k, v in ceiling_cpu.items()} }", flush=True)
    source.drop_collection(name)
    # Two rates: from the create request (the target collection's creation, index and load
    # included), and over the copy alone (from its first count on the source to its last page).
    return {"snapshot_rows_per_s_from_create": rows / elapsed, "snapshot_copy_rows_per_s": copying,
            "snapshot_ceiling_rows_per_s": rate, "snapshot_copy_ratio": copying / rate,
            "snapshot_ratio_from_create": rows / elapsed / rate, "snapshot_appliance_peak_rss_mb": rss[1]}


def steady_lag(source: Cluster, target: Cluster, e: dict, work: Path, rows_per_s: float, samples: int,
               period: float = 0.1) -> dict:
    """Section 3: a task runs while the source takes `rows_per_s` rows a second, a batch every
    `period` seconds, for `samples` seconds; the first batch of each second is a sample: its lag
    is the time from its insert reply until its last row is visible on the target. Each sample is
    split where it can be seen from outside: until the row is visible on the source (the source's
    own time tick and broker hop, which the reader waits for too), until the appliance counts the
    batch's rows applied, and until the target shows them. Then the same load goes straight into
    a collection of the target: its own insert-to-visible time is the floor of the last stage."""
    name = f"bench_lag_{time.time_ns()}"
    work.mkdir(parents=True, exist_ok=True)
    create_collection(source, name, SCHEMA, shards=2, consistency_level="Bounded")
    ensure_loaded(source, name)  # to see when a row is visible there; the task loads the target's too
    server = appliance(work / name, e, {})
    try:
        server.create_task(e["TARGET_MILVUS_URI"], collections=(name,))
        # Its index and load come from the source's, replicated.
        wait_until("the target collection loaded", lambda: load_state(target, name) == "Loaded", timeout=60)
        pids = {**part_pids(), "appliance": server.proc.pid}

        def stages(rows_through: int) -> dict[str, float]:
            # Each stage is watched on its own, so that a slow probe of one does not delay another's.
            def applied() -> float:
                while server.metrics().get("milvus_cdc_rows_applied_total", 0) < rows_through:
                    time.sleep(0.005)
                return time.monotonic()

            probes = {"visible on the source": lambda: wait_visible(source, name, rows_through - 1),
                      "applied": applied,
                      "visible on the target": lambda: wait_visible(target, name, rows_through - 1)}
            with ThreadPoolExecutor(len(probes)) as pool:
                return dict(zip(probes, pool.map(lambda probe: probe(), probes.values())))

        replicated = steady_writes(source.collection(name), rows_per_s, samples, period, pids, stages)
    finally:
        server.stop()
        source.drop_collection(name)
        target.drop_collection(name)
    direct_name = f"bench_lag_direct_{time.time_ns()}"
    create_collection(target, direct_name, SCHEMA, shards=2, consistency_level="Bounded")
    ensure_loaded(target, direct_name)
    try:
        direct = steady_writes(target.collection(direct_name), rows_per_s, samples, period, part_pids(),
                               lambda rows_through: {"visible on the target":
                                                        wait_visible(target, direct_name, rows_through - 1)})
    finally:
        target.drop_collection(direct_name)
    lags = replicated["visible on the target"]
    p50, p99 = statistics.median(lags), percentile99(lags)
    print(f"lag under {replicated['rows_per_s']:.0f} rows/s (asked {rows_per_s:.0f}): p50 {p50:.3f} s, "
          f"p99 {p99:.3f} s, {len(lags)} samples; cores busy: {replicated['cpu']} "
          f"({sum(replicated['cpu'].values()):.2f} of {os.cpu_count()})", flush=True)
    print("  from the insert's reply until:  " + ",  ".join(
        f"{stage} p50 {statistics.median(times):.3f} s p99 {percentile99(times):.3f} s"
        for stage, times in replicated.items() if isinstance(times, list)), flush=True)
    own = direct["visible on the target"]
    print(f"  the target's own insert-to-visible under {direct['rows_per_s']:.0f} rows/s: "
          f"p50 {statistics.median(own):.3f} s, p99 {percentile99(own):.3f} s", flush=True)
    return {"lag_load_rows_per_s": replicated["rows_per_s"], "lag_p50_s": p50, "lag_p99_s": p99,
            **{f"lag_until_{stage.replace(' ', '_')}_p99_s": percentile99(times)
               for stage, times in replicated.items() if isinstance(times, list)},
            "lag_target_own_p50_s": statistics.median(own), "lag_target_own_p99_s": percentile99(own)}


def percentile99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def wait_visible(cluster: Cluster, name: str, pk: int, timeout: float = 120) -> float:
    """When the row `pk` shows in a strong query of `cluster`."""
    deadline = time.monotonic() + timeout
    while not visible(cluster, name, pk):
        if time.monotonic() > deadline:
            raise TimeoutError(f"row {pk} of {name} not visible on {cluster.name} after {timeout:.0f} s")
        time.sleep(0.01)
    return time.monotonic()


def steady_writes(coll, rows_per_s: float, samples: int, period: float, pids: dict[str, int],
                  stages) -> dict:
    """Inserts `rows_per_s` rows a second into `coll`, a batch every `period` seconds, for
    `samples` seconds; for the first batch of each second, `stages(rows through the batch)` gives
    when each stage saw it. Returns each stage's times from the insert's reply, the rate
    achieved and each process's cores busy."""
    per_batch = max(1, round(rows_per_s * period))
    per_second = round(1 / period)
    block = np.random.default_rng(7).random((per_batch, dim()), dtype=np.float32)
    written: dict[int, float] = {}
    failed: list[BaseException] = []

    def write() -> None:
        start = time.monotonic()
        try:
            for i in range(samples * per_second):
                time.sleep(max(0.0, start + i * period - time.monotonic()))
                coll.insert([list(range(i * per_batch, (i + 1) * per_batch)), block])
                written[i] = time.monotonic()
        except BaseException as err:  # reported below
            failed.append(err)

    writer = threading.Thread(target=write, daemon=True)
    cpu_before, own_before = cpu_use(pids), time.process_time()
    started = time.monotonic()
    writer.start()
    times: dict[str, list[float]] = {}
    for i in range(0, samples * per_second, per_second):
        while i not in written:
            if failed or time.monotonic() - started > samples * 10 + 60:
                raise RuntimeError(f"the steady writes stopped: {failed}")
            time.sleep(0.005)
        for stage, at in stages((i + 1) * per_batch).items():
            times.setdefault(stage, []).append(at - written[i])
    writer.join()
    elapsed = time.monotonic() - started
    cpu = {part: round((seconds - cpu_before[part]) / elapsed, 2) for part, seconds in cpu_use(pids).items()}
    cpu["bench (the writer)"] = round((time.process_time() - own_before) / elapsed, 2)
    return {**times, "rows_per_s": len(written) * per_batch / (written[max(written)] - started), "cpu": cpu}


def fresh_testbed(*clusters: Cluster) -> None:
    """Restarts the testbed: its in-memory Kafka slows down as it fills (each run adds the
    backlog's 100 MB or so), which only the replication runs would pay, not the ceiling."""
    for args in (("down",), ("up",)):
        subprocess.run([str(ROOT / "scripts" / "testbed"), *args], check=True, capture_output=True)
    for cluster in clusters:
        connections.disconnect(cluster.name)
        cluster.connect()


def apply_settings(args) -> dict[str, int]:
    """The appliance's [apply] settings given on the command line."""
    return {key: value for key, value in (("max_call_bytes", args.max_call_bytes),
                                          ("max_batch_bytes", args.max_batch_bytes)) if value}


def throughput(args, source: Cluster, target: Cluster, e: dict, work: Path, report: dict) -> None:
    """Sections 1 and 2, `--repeat` times; medians go into `report`."""
    runs, ceilings, matched = [], [], []
    # The applier's shape: a call per shard (2) at a time, each up to max_call_bytes of rows.
    matched_batch = (args.max_call_bytes or 4 << 20) // (8 + 128 * 4 + 16)
    apply = apply_settings(args)
    same_rows = rows_file(work / "rows.bin", args.rows, args.batch)
    for i in range(args.repeat):
        if i:
            fresh_testbed(source, target)
        # A freshly started target takes its first bulk of inserts slower than the next ones, so
        # it is warmed up with the same rows, untimed: no run pays for coming first. The order of
        # the runs alternates too, so neither side always meets the target in the same state.
        ceiling(target, e, same_rows, args.batch)

        def replication():
            runs.append(replicate_backlog(source, target, e, work, args.rows, args.batch, apply))

        def direct():
            ceilings.append(ceiling(target, e, same_rows, args.batch))
            matched.append(ceiling(target, e, same_rows, matched_batch, streams=2)[0])

        for step in (replication, direct) if i % 2 == 0 else (direct, replication):
            step()
        rate, cpu = ceilings[-1]
        shown = lambda cpu: {k: round(v, 2) for k, v in cpu.items()}  # noqa: E731
        print(f"run {i + 1}: catch-up {runs[-1]['catch_up']['rows_per_s']:.0f} rows/s, "
              f"from create {runs[-1]['from_create']['rows_per_s']:.0f} rows/s, ceiling {rate:.0f} rows/s "
              f"(in the applier's shape {matched[-1]:.0f})\n"
              f"   cpu seconds: catch-up {shown(runs[-1]['catch_up']['cpu_s'])}\n"
              f"                ceiling  {shown(cpu)}", flush=True)
    report["ceiling_rows_per_s"] = statistics.median(rate for rate, _ in ceilings)
    report["ceiling_in_the_appliers_shape_rows_per_s"] = statistics.median(matched)
    for mode in ("catch_up", "from_create"):
        median = lambda key: statistics.median(r[mode][key] for r in runs)  # noqa: E731
        report[f"{mode}_rows_per_s"] = median("rows_per_s")
        report[f"{mode}_ratio"] = report[f"{mode}_rows_per_s"] / report["ceiling_rows_per_s"]
        report[f"{mode}_ratio_to_the_appliers_shape"] = (report[f"{mode}_rows_per_s"]
                                                         / report["ceiling_in_the_appliers_shape_rows_per_s"])
        for key in ("first_batch_acknowledged_after_s", "reader_staged_all_after_s", "applier_sent_all_after_s",
                    "batches", *(f"applier_{stage}_s" for stage in STAGES)):
            report[f"{mode}_{key}"] = median(key)
    report["appliance_rss_mb_after_throughput"] = max(r[mode]["rss_mb"][1] for r in runs
                                                      for mode in ("catch_up", "from_create"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lag-batches", type=int, default=40, help="lag samples, one a second")
    parser.add_argument("--lag-load", type=float, default=0.5,
                        help="the steady load under which lag is measured, a share of the ceiling measured")
    parser.add_argument("--lag-rows-per-s", type=float, default=20_000,
                        help="the steady load when no ceiling is measured (--repeat 0)")
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--snapshot-rows", type=int, default=200_000)
    parser.add_argument("--snapshot-repeat", type=int, default=1, help="snapshot copies, their medians reported")
    parser.add_argument("--takeovers", type=int, default=5, help="takeovers in a group of three appliances")
    parser.add_argument("--max-call-bytes", type=int, help="the appliance's [apply] max_call_bytes")
    parser.add_argument("--max-batch-bytes", type=int, help="the appliance's [apply] max_batch_bytes")
    add_scale_flags(parser)
    args = parser.parse_args()
    if args.scale:  # the scale section runs alone
        args.repeat = args.lag_batches = args.backlog = args.snapshot_rows = args.takeovers = 0
    cdc_module.BINARY = ROOT / "target" / "release" / "milvus-cdc"
    e = env()
    source = Cluster("source", e["SOURCE_MILVUS_URI"]).connect()
    target = Cluster("target", e["TARGET_MILVUS_URI"]).connect()
    stamp = int(time.time())
    name = f"bench_{stamp}"
    report = {}
    work = Path(tempfile.mkdtemp(prefix="cdc-bench-"))

    # 1. and 2.
    if args.repeat:
        throughput(args, source, target, e, work, report)

    # 3. lag, live, under a steady load: a share of the ceiling measured above, else a given rate
    if args.lag_batches:
        rate = args.lag_load * report.get("ceiling_rows_per_s", 0) or args.lag_rows_per_s
        report.update(steady_lag(source, target, e, work / "lag", rate, args.lag_batches))

    # 4. memory with a backlog: held in the journal while the target is unreachable, then drained
    # by a restarted appliance once the target can be reached (through a relay started then)
    if args.backlog:
        report.update(backlog_memory(source, target, e, work / "backlog", f"bench_backlog_{stamp}", args.backlog,
                                     apply_settings(args)))

    # 5. the snapshot copy
    if args.snapshot_rows:
        copies = [snapshot_copy(source, target, e, work / "snapshot", args.snapshot_rows, args.batch)
                  for _ in range(args.snapshot_repeat)]
        report.update({key: statistics.median(c[key] for c in copies) for key in copies[0]})
        if len(copies) > 1:
            report["snapshot_copy_ratios"] = " ".join(f"{c['snapshot_copy_ratio']:.2f}" for c in copies)

    # 6. a takeover's write outage in a group
    if args.takeovers:
        report.update(takeover_outage(source, target, e, work / "group", SCHEMA, visible, args.takeovers))

    # 7. scale: many collections, 768-dim vectors, four tasks, a large backlog (bench_scale.py)
    if args.scale:
        report.update(scale(args, source, target, e, work / "scale", lambda: fresh_testbed(source, target)))

    print("\n== replication bench (one run on this machine; throughput figures are medians of --repeat)")
    for key, value in report.items():
        print(f"   {key:<40} {value if not isinstance(value, float) else round(value, 3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
