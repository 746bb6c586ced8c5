"""The alert rules and the Grafana dashboard under deploy/: promtool accepts and passes them, and
every metric name their PromQL uses is one a real appliance exports, so renaming a metric fails
here rather than silently emptying an alert or a panel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import yaml
from pymilvus import DataType, FieldSchema

from cdc import CdcServer
from workload import create_collection, insert, int64_pk, make_rows, schema, unique_name, wait_until

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "milvus-cdc.json"
SMALL = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8), FieldSchema("n", DataType.INT64))

KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool not found: scripts/lib/setup.sh installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: its identifiers, less strings, label
    matchers, ranges, grouping labels, function calls and keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    expr = re.sub(GROUPING, " ", expr)
    found = re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?", expr)
    return {m.group(1) for m in found if not m.group(2) and m.group(1) not in KEYWORDS}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def rule_exprs() -> list[str]:
    return [rule["expr"] for rule in rules()]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def task_scoped(exprs: list[str]) -> set[str]:
    """Names the dashboard selects by its task variable: each has a series per task."""
    return {m for e in exprs for m in re.findall(r'([A-Za-z_:][\w:]*)\{[^}]*task=~"\$task"', e)}


def test_the_name_parser_finds_metric_names_and_nothing_else():
    expr = ('sum by (task, state) (rate(milvus_cdc_a_total{task=~"$task", x="y(z)"}[$__rate_interval])) > 0.5 '
            'and ignoring(channel) group_left milvus_cdc_b unless on(task) histogram_quantile(0.9, c_bucket[5m]) '
            'or absent(d) offset 5m')
    assert metric_names(expr) == {"milvus_cdc_a_total", "milvus_cdc_b", "c_bucket", "d"}


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {rule["alert"] for rule in rules()}
    cases = yaml.safe_load(RULES_TEST.read_text())["tests"]
    tested_alerts = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    assert alerts and tested_alerts == alerts, f"alerts without a test: {alerts - tested_alerts}"


def test_every_dashboard_query_is_valid_promql(tmp_path):
    """Each panel's query, with Grafana's variables filled in, as a recording rule promtool parses."""
    exprs = dashboard_exprs()
    assert len(exprs) >= 10, exprs
    recording = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e.replace("$__rate_interval", "5m").replace("$task", ".*")}
        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(recording))  # JSON is YAML
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    templating = json.loads(DASHBOARD.read_text())["templating"]["list"]
    assert {v["name"]: v["type"] for v in templating} == {"datasource": "datasource", "task": "query"}


def scrape(server: CdcServer) -> str:
    req = urllib.request.Request(server.url("/metrics"), headers=server.headers())
    return urllib.request.urlopen(req, timeout=5).read().decode()


def exported(text: str) -> dict[str, set[str]]:
    """Each sample name of a /metrics text, with the tasks it has series of."""
    names: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[A-Za-z_:][\w:]*", line).group(0)
            task = re.search(r'\btask="([^"]*)"', line)
            names.setdefault(name, set()).update([task.group(1)] if task else [])
    return names


def test_every_metric_the_rules_and_the_dashboard_use_is_exported(tmp_path, env, source, target, names):
    """A one-member group (so the group's metrics are there), one task, a few rows replicated."""
    server = CdcServer(tmp_path, env)
    server.config.write_text(server.config.read_text() + (
        "[group]\n"
        f'etcd_endpoints = ["{env.get("ETCD_ENDPOINTS", "127.0.0.1:2379")}"]\n'
        f'key_prefix = "{unique_name("alerts")}"\n'
        'name = "alerts-a"\n'
        f'advertise_url = "{server.url("")}"\n'))
    server.start()
    try:
        name = names("alerts")
        task = server.create_task(target.uri, collections=(name,))
        create_collection(source, name, SMALL)
        insert(source, name, make_rows(SMALL, range(20), seed=7))

        dashboard = dashboard_exprs()
        used = set().union(*map(metric_names, rule_exprs() + dashboard))
        annotations = " ".join(text for rule in rules() for text in rule["annotations"].values())
        annotated = set(re.findall(r"milvus_cdc_\w+", annotations))
        per_task = task_scoped(dashboard)
        assert len(used) >= 12 and len(per_task) >= 5, (used, per_task)

        def missing() -> list[str]:
            series = exported(scrape(server))
            return sorted([n for n in used | annotated if n not in series]
                          + [f"{n}{{task={task}}}" for n in per_task if task not in series.get(n, ())])

        wait_until("every metric the rules and the dashboard use, with the task's series", missing,
                   timeout=25, interval=0.5)
    finally:
        server.stop()
