"""Fixtures for the end-to-end tests: the testbed's source and target Milvus.

Addresses come from the environment, else from `.testbed/env` written by `scripts/testbed up`."""

import os
from pathlib import Path

import pytest

from cdc import CdcServer
from workload import Cluster, unique_name

ROOT = Path(__file__).resolve().parents[2]


def testbed_env() -> dict:
    env = {}
    path = ROOT / ".testbed" / "env"
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value
    env.update({k: v for k, v in os.environ.items() if k in env or k.endswith("_MILVUS_URI")})
    return env


@pytest.fixture(scope="session")
def env() -> dict:
    env = testbed_env()
    if "SOURCE_MILVUS_URI" not in env:
        pytest.fail("the testbed is not up: run scripts/testbed up (it writes .testbed/env)")
    return env


@pytest.fixture(scope="session")
def source(env) -> Cluster:
    return Cluster("source", env["SOURCE_MILVUS_URI"]).connect()


@pytest.fixture(scope="session")
def target(env) -> Cluster:
    return Cluster("target", env["TARGET_MILVUS_URI"]).connect()


@pytest.fixture
def server(tmp_path, env) -> CdcServer:
    """The appliance, started with no task."""
    server = CdcServer(tmp_path, env).start()
    yield server
    server.stop()


@pytest.fixture
def names(source, target):
    """`names(prefix)` gives a new collection name; each is dropped on both sides at the end."""
    created = []
    yield lambda prefix: created.append(unique_name(prefix)) or created[-1]
    for name in created:
        for cluster in (source, target):
            cluster.drop_collection(name)
