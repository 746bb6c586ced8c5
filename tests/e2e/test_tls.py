"""TLS end to end: the API over HTTPS, and the target, the source's etcd and its Kafka reached
over TLS.

Every certificate is made by the test (`certs.py`): a CA of its own and a server certificate it
signs for 127.0.0.1 and localhost. The target, etcd and Kafka are reached through relays that
accept TLS only and pass the plaintext on to the testbed's, so a connection that is not TLS (or
does not trust the test's CA) gets nothing through, and the replication checked below could not
happen. Pulsar over TLS is in `test_pulsar.py`, with the Pulsar testbed."""

from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest
from pymilvus import DataType, FieldSchema

from cdc import BINARY, CdcServer, free_port
from certs import Certs, make_certs
from kafka_relay import KafkaRelay
from relay import TcpRelay
from workload import assert_replicated, create_collection, delete, insert, int64_pk, make_rows, schema, upsert

ROWS = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8),
              FieldSchema("title", DataType.VARCHAR, max_length=32))


@pytest.fixture
def certs(tmp_path) -> Certs:
    folder = tmp_path / "certs"
    folder.mkdir()
    return make_certs(folder)


def api_tls(certs: Certs) -> str:
    return f'[api]\ntls_cert_file = "{certs.cert}"\ntls_key_file = "{certs.key}"\n'


def port_of(uri: str) -> int:
    return urllib.parse.urlsplit(uri if "://" in uri else f"//{uri}").port


def small_workload(source, name: str) -> None:
    create_collection(source, name, ROWS, shards=2)
    insert(source, name, make_rows(ROWS, range(3_000), seed=31), batch=1_000)
    delete(source, name, list(range(0, 3_000, 7)))
    upsert(source, name, make_rows(ROWS, range(1, 3_000, 11), seed=32), batch=1_000)


def test_the_api_serves_https_and_nothing_else(tmp_path, env, certs):
    server = CdcServer(tmp_path, env, extra_config=api_tls(certs), api_ca=certs.ca).start()
    try:
        assert server.request("GET", "/v1/tasks") == (200, {"tasks": []})
        assert "listening on https://" in server.log.read_text()
        # The server answers a plaintext request with a TLS alert, which is no HTTP reply.
        with pytest.raises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5).read()
        # The certificate is checked for real: a client that trusts only the system's roots
        # refuses it.
        with pytest.raises(urllib.error.URLError) as refused:
            urllib.request.urlopen(server.url("/healthz"), timeout=5,
                                   context=ssl.create_default_context()).read()
        assert isinstance(refused.value.reason, ssl.SSLCertVerificationError), refused.value
        # The CLI, told the CA, and not.
        cli = [str(BINARY), "task", "--server", server.url(""), "list", "--json"]
        listed = subprocess.run(cli + ["--ca-file", str(certs.ca)], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0 and json.loads(listed.stdout) == {"tasks": []}, listed.stderr
        untrusted = subprocess.run(cli, capture_output=True, text=True, timeout=30)
        assert untrusted.returncode != 0 and "UnknownIssuer" in untrusted.stderr, untrusted.stderr
    finally:
        server.stop()


def test_a_certificate_or_ca_that_cannot_be_read_stops_the_server_with_its_name(tmp_path, env, certs):
    missing = tmp_path / "nowhere" / "server.pem"
    server = CdcServer(tmp_path, env, api_ca=certs.ca,
                       extra_config=f'[api]\ntls_cert_file = "{missing}"\ntls_key_file = "{certs.key}"\n')
    with pytest.raises(RuntimeError, match="exited"):
        server.start()
    last = server.log.read_text().strip().splitlines()[-1]
    assert str(missing) in last and "tls_cert_file" in last, last

    (tmp_path / "half").mkdir()
    half = CdcServer(tmp_path / "half", env, extra_config=f'[api]\ntls_cert_file = "{certs.cert}"\n')
    with pytest.raises(RuntimeError, match="exited"):
        half.start()
    last = half.log.read_text().strip().splitlines()[-1]
    assert "tls_key_file is not set" in last, last

    (tmp_path / "ca").mkdir()
    not_pem = tmp_path / "ca" / "ca.pem"
    not_pem.write_text("not a certificate\n")
    bad_ca = CdcServer(tmp_path / "ca", env, extra_config=f'[target]\nca_file = "{not_pem}"\n')
    with pytest.raises(RuntimeError, match="exited"):
        bad_ca.start()
    last = bad_ca.log.read_text().strip().splitlines()[-1]
    assert "[target] ca_file" in last and str(not_pem) in last, last


def test_a_target_behind_tls_is_replicated_to(tmp_path, env, source, target, certs, names):
    """The target uri is https:// to a TLS-only front of the testbed's target; the appliance
    trusts the test's CA through `[target] ca_file`."""
    front = TcpRelay(free_port(), port_of(env["TARGET_MILVUS_URI"]), tls=certs.server_context()).start()
    server = CdcServer(tmp_path, env, extra_config=f'[target]\nca_file = "{certs.ca}"\n').start()
    try:
        name = names("tls_target")
        server.create_task(f"https://127.0.0.1:{front.port}", collections=(name,))
        small_workload(source, name)
        assert_replicated(source, target, name, timeout=180)
        assert front.connections > 0
    finally:
        server.stop()
        front.stop()


def test_the_source_etcd_behind_tls_is_read(tmp_path, env, source, target, certs, names):
    """The source's etcd is reached at https:// through a TLS-only front, trusting the test's CA
    through `[source] etcd_ca_file`: a task's create and its new collection both need it."""
    etcd_port = port_of(env.get("ETCD_ENDPOINTS", "127.0.0.1:2379").split(",")[0])
    front = TcpRelay(free_port(), etcd_port, tls=certs.server_context()).start()
    server = CdcServer(tmp_path, env, etcd_endpoint=f"https://127.0.0.1:{front.port}",
                       source_config=f'etcd_ca_file = "{certs.ca}"\n').start()
    try:
        name = names("tls_etcd")
        server.create_task(target.uri, collections=(name,))
        assert front.connections > 0
        small_workload(source, name)
        assert_replicated(source, target, name, timeout=180)
    finally:
        server.stop()
        front.stop()


def test_the_source_kafka_behind_tls_is_read(tmp_path, env, source, target, certs, names):
    """The source's Kafka is reached through a TLS-only front (which names itself as the broker
    in metadata), trusting the test's CA through `[source.mq] ca_file`."""
    kafka_port = port_of(env.get("KAFKA_BROKERS", "127.0.0.1:9092").split(",")[0])
    front = KafkaRelay(free_port(), kafka_port, tls=certs.server_context(grpc=False)).start()
    server = CdcServer(tmp_path, env, kafka_brokers=f"127.0.0.1:{front.port}",
                       mq_config=f'ca_file = "{certs.ca}"\n').start()
    try:
        name = names("tls_kafka")
        server.create_task(target.uri, collections=(name,))
        small_workload(source, name)
        assert_replicated(source, target, name, timeout=180)
        assert front.connections > 0 and front.rewritten > 0
    finally:
        server.stop()
        front.stop()
