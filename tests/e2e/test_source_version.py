"""A task is refused on a source Milvus whose messages the decoder was not written for."""

import json
import os
import subprocess

from cdc import CdcServer


def etcdctl(env: dict, *args: str) -> None:
    subprocess.run(["etcdctl", f"--endpoints={env.get('ETCD_ENDPOINTS', '127.0.0.1:2379')}", *args],
                   check=True, capture_output=True, env={**os.environ, "ETCDCTL_API": "3"})


def test_a_source_of_another_milvus_version_is_refused_naming_it(tmp_path, env, target):
    # A source registered as Milvus 2.4 under an etcd root of its own.
    root = f"version-test-{os.getpid()}"
    session = json.dumps({"ServerID": 1, "ServerName": "rootcoord", "Version": "2.4.0"})
    etcdctl(env, "put", f"{root}/meta/session/rootcoord", session)
    try:
        server = CdcServer(tmp_path, env)
        server.config.write_text(server.config.read_text().replace(
            f'etcd_root_path = "{env.get("SOURCE_ETCD_ROOT", "by-dev")}"', f'etcd_root_path = "{root}"'))
        server.start()
        try:
            status, reply = server.post("create", {
                "milvus_connect_param": {"uri": target.uri, "token": ""},
                "collection_infos": [{"name": "*"}]})
            assert status == 409, reply
            assert "version 2.4.0" in reply["message"] and "2.3.x" in reply["message"], reply
            assert server.request("GET", "/v1/tasks")[1]["tasks"] == []
        finally:
            server.stop()
    finally:
        etcdctl(env, "del", "--prefix", f"{root}/")


def test_the_testbed_source_is_a_version_the_decoder_reads(server, target):
    assert server.create_task(target.uri, collections=("nothing_by_this_name",))
    assert 'source_version="2.3.5"' in server.log.read_text()
