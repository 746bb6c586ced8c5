"""The journal's disk fills up: staging stops, `/readyz` says why (while `/healthz` stays live),
and once there is space again the appliance goes on without a restart and without loss. The
data dir is on a small tmpfs the test mounts (the tests run as root)."""

import subprocess
import urllib.error
import urllib.request

import pytest
from pymilvus import DataType, FieldSchema

from cdc import CdcServer
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
    server.config.write_text(server.config.read_text().replace(
        f'data_dir = "{tmp_path / "data"}"', f'data_dir = "{small_disk / "data"}"'))
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
        assert "journal writes fail" in why and "since" in why, why
        assert probe(server, "/healthz")[0] == 200, "the process is alive"
        reason = server.request("GET", f"/v1/tasks/{task}")[1]["reason"]
        assert "disk" in reason, reason
        assert server.proc.poll() is None

        filler.unlink()
        assert_replicated(source, target, name, timeout=180)
        wait_until("/readyz to be ready again",
                   lambda: [] if probe(server, "/readyz")[0] == 200 else [probe(server, "/readyz")], timeout=60)
    finally:
        server.stop()
        filler.unlink(missing_ok=True)
