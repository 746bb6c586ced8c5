"""The status page at `/`, rendered by a real headless Chromium (Debian's `chromium`): it lists
the task with its state, lag, consistency point, snapshot copy and last verify, and draws its
lag over time. The screenshot is kept in `target/e2e/status-page.png`."""

import re
import shutil
import subprocess

import pytest
from pymilvus import DataType, FieldSchema

from cdc import ROOT, CdcServer
from workload import (assert_replicated, create_collection, ensure_loaded, insert, int64_pk, make_rows, schema,
                      unique_name, wait_until)

SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: the test may run as root; --virtual-time-budget lets the page's fetch finish.
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=8000", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test installs it)")
def test_the_status_page_shows_the_task_and_its_lag_chart(tmp_path, env, source, target):
    name = unique_name("page")
    server = CdcServer(tmp_path, env).start()
    try:
        create_collection(source, name, SMALL)
        insert(source, name, make_rows(SMALL, range(500), seed=1), batch=500)
        ensure_loaded(source, name)
        status, created = server.request("POST", "/v1/tasks", {
            "milvus_connect_param": {"uri": target.uri}, "collection_infos": [{"name": name}],
            "start_position": "snapshot"})
        assert status == 201, created
        task = created["task_id"]
        insert(source, name, make_rows(SMALL, range(500, 600), seed=2), batch=500)
        assert_replicated(source, target, name)
        status, verified = server.request("POST", f"/v1/tasks/{task}/verify")
        assert status == 200 and verified["equal"], verified
        # The chart draws a line through two lag samples at least (one every 5 s).
        samples = lambda: next(t for t in server.request("GET", "/v1/status")[1]["tasks"]  # noqa: E731
                               if t["task_id"] == task).get("history", [])
        wait_until("two lag samples", lambda: [] if len(samples()) >= 2 else [samples()], timeout=30, interval=0.5)
        url = f"http://127.0.0.1:{server.port}/"
        dom = chromium("--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert f'<tr data-task="{task}">' in dom.stdout, dom.stdout[-3000:]
        assert '<td class="Running">Running</td>' in dom.stdout
        # The consistency point, an RFC 3339 UTC time, and its RPO in seconds.
        assert re.search(r'<td class="consistent">\d{4}-\d\d-\d\dT[\d:.]+Z</td>', dom.stdout), dom.stdout[-3000:]
        assert re.search(r'<td class="rpo">[\d.]+ s</td>', dom.stdout), dom.stdout[-3000:]
        # The snapshot copy, done, and the last verify.
        assert '<td class="snapshot">copied</td>' in dom.stdout, dom.stdout[-3000:]
        assert re.search(r'<td class="verified">equal at \d{4}-\d\d-\d\dT[\d:]+Z</td>', dom.stdout), dom.stdout[-3000:]
        assert f'<svg width="720" height="160" data-task="{task}">' in dom.stdout
        assert '<polyline class="lag"' in dom.stdout, "no lag line drawn"

        shot = ROOT / "target" / "e2e" / "status-page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.unlink(missing_ok=True)
        taken = chromium(f"--screenshot={shot}", "--window-size=900,600", url)
        assert taken.returncode == 0, taken.stderr[-2000:]
        assert shot.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    finally:
        server.stop()
        for cluster in (source, target):
            cluster.drop_collection(name)
