"""The journal's disk fills up, by another file or by the journal's own growth while the target
is away: staging is held while the disk has less room than the journal keeps, `/readyz` and the
task say why (while `/healthz` stays live), and once there is room again, or the applier has
drained the journal, the appliance goes on without a restart and without loss. The data dir is
on a small tmpfs the test mounts (the tests run as root)."""

import subprocess
import urllib.error
import urllib.request

import pytest
from pymilvus import DataType, FieldSchema

from cdc import CdcServer, free_port
from relay import TcpRelay
from workload import assert_replicated, create_collection, insert, int64_pk, make_rows, schema, wait_until

WIDE = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=64))


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def probe(server: CdcServer, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_a_full_disk_stops_staging_says_so_and_heals_when_space_is_back(tmp_path, env, source, target,
                                                                        names, small_disk):
    server = CdcServer(tmp_path, env)
    # The default reserve (64 MiB) is more than this whole disk.
    server.config.write_text(server.config.read_text().replace(
        f'data_dir = "{tmp_path / "data"}"', f'data_dir = "{small_disk / "data"}"')
        + "[journal]\ndisk_reserve_bytes = 4194304\n")
    server.start()
    filler = small_disk / "filler"
    try:
        name = names("disk")
        task = server.create_task(target.uri, collections=(name,))
        create_collection(source, name, WIDE, shards=2)
        insert(source, name, make_rows(WIDE, range(2_000), seed=50))
        assert_replicated(source, target, name, timeout=120)
        assert probe(server, "/readyz") == (200, "ready")

        # Everything but a little: the next rows do not fit.
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "status=none"], check=False)
        insert(source, name, make_rows(WIDE, range(2_000, 30_000), seed=51), batch=5_000)
        wait_until("/readyz to say the journal cannot write",
                   lambda: [] if probe(server, "/readyz")[0] == 503 else [probe(server, "/readyz")], timeout=60)
        status, why = probe(server, "/readyz")
        assert "staging held" in why and str(small_disk) in why and "since" in why, why
        gauges = server.metrics()
        assert (gauges["milvus_cdc_ready"], gauges["milvus_cdc_journal_staging_held"]) == (0, 1), gauges
        assert probe(server, "/healthz")[0] == 200, "the process is alive"
        reason = server.request("GET", f"/v1/tasks/{task}")[1]["reason"]
        assert "disk" in reason, reason
        assert server.proc.poll() is None

        filler.unlink()
        assert_replicated(source, target, name, timeout=180)
        wait_until("/readyz to be ready again",
                   lambda: [] if probe(server, "/readyz")[0] == 200 else [probe(server, "/readyz")], timeout=60)
        gauges = server.metrics()
        assert (gauges["milvus_cdc_ready"], gauges["milvus_cdc_journal_staging_held"]) == (1, 0), gauges
    finally:
        server.stop()
        filler.unlink(missing_ok=True)


def test_the_journal_filling_its_own_disk_while_the_target_is_away_drains_and_resumes_by_itself(
        tmp_path, env, source, target, names, small_disk):
    relay = TcpRelay(free_port(), int(target.uri.rsplit(":", 1)[1])).start()
    server = CdcServer(tmp_path, env)
    server.config.write_text(server.config.read_text().replace(
        f'data_dir = "{tmp_path / "data"}"', f'data_dir = "{small_disk / "data"}"')
        + "[journal]\ndisk_reserve_bytes = 4194304\n")
    server.start()
    try:
        name = names("growth")
        task = server.create_task(f"http://127.0.0.1:{relay.port}", collections=(name,))
        create_collection(source, name, WIDE, shards=2)
        insert(source, name, make_rows(WIDE, range(1_000), seed=60))
        wait_until(f"{name} on the target", lambda: [] if target.has_collection(name) else ["not yet"],
                   timeout=60)
        relay.cut()

        # Nothing but the journal's own rows fills the disk: written until staging is held.
        written = 1_000
        while probe(server, "/readyz")[0] == 200:
            assert written < 300_000, "48 MiB never filled"
            insert(source, name, make_rows(WIDE, range(written, written + 10_000), seed=written), batch=5_000)
            written += 10_000
        status, why = probe(server, "/readyz")
        assert status == 503 and "staging held" in why and "since" in why, why
        wait_until("the task to name the disk", lambda: [] if "journal disk" in (
            server.request("GET", f"/v1/tasks/{task}")[1].get("reason") or "") else ["not yet"], timeout=30)
        assert server.request("GET", f"/v1/tasks/{task}")[1]["state"] == "Running"
        assert probe(server, "/healthz")[0] == 200

        relay.heal()
        assert_replicated(source, target, name, timeout=420)
        wait_until("/readyz to be ready again",
                   lambda: [] if probe(server, "/readyz")[0] == 200 else [probe(server, "/readyz")], timeout=60)
        assert server.proc.poll() is None, "no restart"
        assert "No space left" not in server.log.read_text()
    finally:
        server.stop()
        relay.stop()
