"""Runs the real `milvus-cdc serve` binary against the testbed, and talks to its API."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "debug" / "milvus-cdc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CdcServer:
    def __init__(self, workdir: Path, env: dict, extra_env: dict | None = None, channel_prefix: str = "by-dev",
                 pulsar_url: str | None = None, etcd_endpoint: str | None = None, source_config: str = "",
                 extra_config: str = "", api_ca: Path | None = None, kafka_brokers: str | None = None,
                 mq_config: str = "", source_api: bool = True):
        """`pulsar_url`: read the testbed's Pulsar source (etcd root `SOURCE_PULSAR_ETCD_ROOT`)
        through that service URL instead of the Kafka source. `etcd_endpoint` replaces the
        testbed's, as `kafka_brokers` does its Kafka; `source_config` is more lines of `[source]`,
        `mq_config` of `[source.mq]`, `extra_config` more tables at the end of the config. `api_ca`: the API serves HTTPS with a certificate of that CA. `source_api`: the config names the
        source's Milvus API (`milvus_uri`), which verify reads."""
        self.workdir = workdir
        self.port = free_port()
        self.extra_env = extra_env or {}
        # Sent as a bearer token when set; the server requires it when started with one.
        self.token = self.extra_env.get("MILVUS_CDC_API_TOKEN")
        self.log = workdir / "cdc.log"
        self.config = workdir / "cdc.toml"
        self.scheme = "https" if api_ca else "http"
        self.ssl = ssl.create_default_context(cafile=str(api_ca)) if api_ca else None
        etcd = etcd_endpoint or env.get("ETCD_ENDPOINTS", "127.0.0.1:2379")
        if pulsar_url:
            etcd_root = env.get("SOURCE_PULSAR_ETCD_ROOT", "by-dev-pulsar")
            source_uri = env.get("SOURCE_PULSAR_MILVUS_URI", "http://127.0.0.1:19550")
            mq = f'type = "pulsar"\nurl = "{pulsar_url}"\n'
        else:
            etcd_root = env.get("SOURCE_ETCD_ROOT", "by-dev")
            source_uri = env.get("SOURCE_MILVUS_URI", "http://127.0.0.1:19530")
            mq = f'type = "kafka"\nbrokers = "{kafka_brokers or env.get("KAFKA_BROKERS", "127.0.0.1:9092")}"\n'
        self.config.write_text(
            f'listen = "127.0.0.1:{self.port}"\n'
            f'data_dir = "{workdir / "data"}"\n'
            "[source]\n"
            f'etcd_endpoints = ["{etcd}"]\n'
            f'etcd_root_path = "{etcd_root}"\n'
            f'channel_prefix = "{channel_prefix}"\n'
            + (f'milvus_uri = "{source_uri}"\n' if source_api else "")
            + source_config
            + "[source.mq]\n"
            + mq
            + mq_config
            + extra_config
        )
        self.proc: subprocess.Popen | None = None

    def start(self, extra_env: dict | None = None) -> "CdcServer":
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} not built: run cargo build")
        env = {**os.environ, "RUST_LOG": "info", **self.extra_env, **(extra_env or {})}
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([str(BINARY), "serve", "--config", str(self.config)],
                                     stdout=log, stderr=log, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-cdc exited with {self.proc.returncode}; see {self.log}")
            try:
                urllib.request.urlopen(self.url("/healthz"), timeout=1, context=self.ssl).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"milvus-cdc did not answer on port {self.port}; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def headers(self) -> dict:
        return {"content-type": "application/json",
                **({"authorization": f"Bearer {self.token}"} if self.token else {})}

    def metrics(self) -> dict:
        req = urllib.request.Request(self.url("/metrics"), headers=self.headers())
        text = urllib.request.urlopen(req, timeout=5, context=self.ssl).read().decode()
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line and not line.startswith("#")}

    def post(self, request_type: str, data: dict | None = None, raw: bytes | None = None) -> tuple[int, dict]:
        """`POST /cdc` with the reference CDC's envelope (or a raw body)."""
        body = raw if raw is not None else json.dumps({"request_type": request_type, "request_data": data or {}}).encode()
        return self.request("POST", "/cdc", raw=body)

    def request(self, method: str, path: str, body: dict | None = None,
                raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict | None]:
        """Any API call: (HTTP status, JSON reply or None when the reply has no body).
        `headers` are added to (or replace) the usual ones."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url(path), data=data, method=method,
                                     headers={**self.headers(), **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=60, context=self.ssl) as resp:
                text = resp.read()
                return resp.status, json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def create_task(self, target_uri: str, collections=("*",), start: str = "latest") -> str:
        status, reply = self.post("create", {
            "milvus_connect_param": {"uri": target_uri, "token": ""},
            "collection_infos": [{"name": c} for c in collections],
            "start_position": start,
        })
        assert status == 200 and reply["code"] == 200, reply
        return reply["data"]["task_id"]
