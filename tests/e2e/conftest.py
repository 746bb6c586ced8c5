"""Fixtures for the end-to-end tests: the testbed's source and target Milvus.

Addresses come from the environment, else from `.testbed/env` written by `scripts/testbed up`."""

import os
from pathlib import Path

import pytest

from workload import Cluster

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
