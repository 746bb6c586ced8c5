"""TLS end to end: the API over HTTPS, and the target, the source's etcd and its Kafka reached
over TLS.

Every certificate is made here: a CA of the test's own and a server certificate it signs for
127.0.0.1 and localhost. The target, etcd and Kafka are reached through relays that accept TLS only
and pass the plaintext on to the testbed's, so a connection that is not TLS (or does not trust
the test's CA) gets nothing through, and the replication checked below could not happen."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pymilvus import DataType, FieldSchema

from cdc import CdcServer, free_port
from kafka_relay import KafkaTlsRelay
from relay import TcpRelay
from workload import assert_replicated, create_collection, delete, insert, int64_pk, make_rows, schema, upsert

ROWS = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8),
              FieldSchema("title", DataType.VARCHAR, max_length=32))


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """What a TLS front for a gRPC server needs: this certificate, and HTTP/2 by ALPN."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        context.set_alpn_protocols(["h2"])
        return context


def kafka_context(certs: Certs) -> ssl.SSLContext:
    """Kafka has no ALPN: the same certificate, without HTTP/2."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.cert, certs.key)
    return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certs(folder: Path) -> Certs:
    """A CA and a server certificate it signs for 127.0.0.1 and localhost, as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = dict(not_valid_before=now - datetime.timedelta(minutes=5),
                 not_valid_after=now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder(subject_name=_name("milvus-cdc test CA"), issuer_name=_name("milvus-cdc test CA"),
                                       public_key=ca_key.public_key(), serial_number=x509.random_serial_number(),
                                       **valid)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder(subject_name=_name("127.0.0.1"), issuer_name=ca_cert.subject,
                                    public_key=key.public_key(), serial_number=x509.random_serial_number(), **valid)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    certs = Certs(folder / "ca.pem", folder / "server.pem", folder / "server-key.pem")
    certs.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return certs


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
    finally:
        server.stop()


def test_a_certificate_that_cannot_be_read_stops_the_server_with_its_name(tmp_path, env, certs):
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
    front = KafkaTlsRelay(free_port(), kafka_port, tls=kafka_context(certs)).start()
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
