"""An upgrade keeps the journal: the appliance started on a journal an earlier release wrote
(journal format 1, before the format was versioned: `tests/fixtures/journal-format-1`, made by
its `make.py` from a pinned commit) carries its task on, and the rows that release staged and
never applied reach the target, equal row by row to what the source held.

What the fixture's stored positions would mean here: its source offsets are Kafka offsets of
the testbed that made it, and a task resumes every channel it has an offset for at once
(`Supervisor::run_channels`), whatever the channel prefix. On another testbed, or this one
later, they point anywhere: past a topic's end (a testbed made since: the task fails,
`ReaderError::NotRetained`, and stops applying), at another topic's messages (fails,
`OtherTopic`), or at weeks of other tests' traffic, the fixture collection's own drop by
`make.py` among it (replicated, it would drop what the test checks). So the appliance runs
with the source unreachable: its Kafka brokers and etcd are addresses nothing listens on. The
readers wait for the broker and never read (nor fail the task), the metadata watcher waits for
etcd, and what is applied is exactly what the old release staged, each row covered by the
tick staged with it: an upgrade while the source is away. The test then depends neither on the
testbed's history nor on what its source holds: the expected rows are the maker's
(`make.expected_rows`). Its positions then show every staged row applied and the source
offsets as the old release stored them. The task's target is the relay address it was created with,
relayed to this testbed's target."""

import importlib.util
import json
import shutil
from pathlib import Path

from pymilvus import MilvusException

from cdc import CdcServer, free_port
from relay import TcpRelay
from workload import all_rows, ensure_loaded, values_equal, wait_until

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "journal-format-1"
_spec = importlib.util.spec_from_file_location("journal_format_1", FIXTURE / "make.py")
make = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make)


def test_a_journal_of_format_1_is_carried_on_and_its_pending_rows_reach_the_target(tmp_path, env, target):
    target.drop_collection(make.NAME)  # left by an earlier run that failed
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    shutil.copyfile(FIXTURE / "journal.redb", data / "journal.redb")
    relay = TcpRelay(make.RELAY_PORT, int(target.uri.rsplit(":", 1)[1])).start()
    nowhere = f"127.0.0.1:{free_port()}"
    server = CdcServer(tmp_path, env, kafka_brokers=nowhere, etcd_endpoint=nowhere, source_api=False)
    try:
        server.start()
        task = server.request("GET", f"/v1/tasks/{make.TASK}")[1]
        assert (task["state"], task["milvus_connect_param"]["uri"], task["collection_infos"]) == \
            ("Running", f"http://127.0.0.1:{make.RELAY_PORT}", [{"name": make.NAME}]), task
        expected = make.expected_rows()

        def differences() -> list:
            if not target.has_collection(make.NAME):
                return [f"{make.NAME} not on the target yet"]
            try:
                rows = all_rows(ensure_loaded(target, make.NAME))
            except MilvusException as err:  # created, not loadable yet
                return [err]
            problems = []
            if missing := sorted(expected.keys() - rows.keys()):
                problems.append(f"{len(missing)} rows missing, e.g. {missing[:5]}")
            if extra := sorted(rows.keys() - expected.keys()):
                problems.append(f"{len(extra)} extra rows, e.g. {extra[:5]}")
            changed = sorted(k for k in expected.keys() & rows.keys() if not values_equal(expected[k], rows[k]))
            problems += [f"pk {k}: expected {expected[k]}, target {rows[k]}" for k in changed[:3]]
            return problems
        wait_until("the staged rows on the target, equal to the source's", differences, timeout=30, interval=0.5)
        assert server.request("GET", f"/v1/tasks/{make.TASK}")[1]["state"] == "Running"
        positions = server.request("GET", f"/v1/tasks/{make.TASK}/positions")[1]
        assert {c["channel"]: (c["next_offset"], c["tick"]) for c in positions["channels"]} == stored_offsets(), \
            "the source offsets as the old release stored them"
        assert {a["vchannel"]: (a["ts"], a["seq"]) for a in positions["applied"]} == last_rows(), \
            "every row staged applied"
    finally:
        # Not a graceful stop: that waits out the Kafka client's metadata timeout (10 s) against
        # the absent broker, and the journal, in a temporary dir, is not looked at again.
        server.kill()
        relay.stop()
        target.drop_collection(make.NAME)


def maker_dump(kind: str) -> list[dict]:
    """The entries of `kind` the old release showed of the fixture (`make.py`'s `dump --json`)."""
    lines = (FIXTURE / "dump-by-maker.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, lines) if entry["kind"] == kind]


def stored_offsets() -> dict:
    return {e["pchannel"]: (e["offset"]["next"]["Kafka"]["next_offset"], e["offset"]["tick"])
            for e in maker_dump("source_offset")}


def last_rows() -> dict:
    """Each vchannel's last staged row, as (ts, seq)."""
    last: dict = {}
    for row in maker_dump("row"):
        last[row["vchannel"]] = max(last.get(row["vchannel"], (0, 0)), (row["ts"], row["seq"]))
    return last
