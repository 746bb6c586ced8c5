"""Safe by default: what a hostile web page or a curious local user can do to the appliance.

The browser-borne requests are sent exactly as a browser sends them: a cross-site form post is
`Content-Type: text/plain` with the attacker's `Origin`; a DNS-rebound page names its own host
in `Host`."""

import json
import os
import secrets
import stat
import subprocess
import urllib.error
import urllib.request

import pytest
from pymilvus import DataType, FieldSchema

from cdc import BINARY, CdcServer
from workload import assert_replicated, create_collection, insert, int64_pk, make_rows, schema

CREATE = {
    "request_type": "create",
    "request_data": {
        "milvus_connect_param": {"uri": "http://127.0.0.1:1", "token": ""},
        "collection_infos": [{"name": "*"}],
    },
}


def reply_text(server: CdcServer, method: str, path: str, body: dict | None) -> str:
    """The raw reply, whatever its status and content type."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data, method=method,
                                 headers=server.headers())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.read().decode()


def refused(server: CdcServer) -> dict:
    return {reason: server.metrics().get(f'milvus_cdc_api_requests_refused_total{{reason="{reason}"}}', 0)
            for reason in ("host", "origin", "token")}


def tasks(server: CdcServer) -> list:
    status, reply = server.request("GET", "/v1/tasks")
    assert status == 200, reply
    return reply["tasks"]


def test_a_cross_site_form_post_cannot_create_a_task(server):
    before = refused(server)
    status, reply = server.request("POST", "/cdc", raw=json.dumps(CREATE).encode(), headers={
        "content-type": "text/plain", "origin": "http://evil.example"})
    assert status == 403, reply
    assert "another site" in reply["message"] and "evil.example" in reply["message"]
    status, reply = server.request("POST", "/cdc", raw=json.dumps(CREATE).encode(), headers={
        "content-type": "application/x-www-form-urlencoded", "sec-fetch-site": "cross-site"})
    assert status == 403, reply
    assert tasks(server) == [], "nothing was created"
    assert refused(server)["origin"] == before["origin"] + 2


def test_a_rebound_page_can_neither_read_nor_drive_the_api(server):
    for method, path in [("GET", "/v1/tasks"), ("GET", "/metrics"), ("GET", "/"), ("POST", "/cdc")]:
        status, reply = server.request(method, path, raw=b"{}" if method == "POST" else None,
                                       headers={"host": f"attacker.example:{server.port}"})
        assert status == 421, (path, reply)
        assert "attacker.example" in reply["message"]
    assert refused(server)["host"] >= 4


def test_scripts_without_an_origin_and_the_status_page_itself_still_work(server):
    """A plain `curl -d`, as the reference CDC documents, and the page's own same-origin calls."""
    result = subprocess.run(["curl", "-s", "-d", '{"request_type":"list","request_data":{}}',
                             f"http://127.0.0.1:{server.port}/cdc"], capture_output=True, check=True)
    assert json.loads(result.stdout)["code"] == 200
    status, _ = server.request("GET", "/v1/status", headers={
        "host": f"localhost:{server.port}", "sec-fetch-site": "same-origin"})
    assert status == 200
    status, _ = server.request("POST", "/cdc", raw=b'{"request_type":"list","request_data":{}}',
                               headers={"origin": f"http://127.0.0.1:{server.port}"})
    assert status == 200


def test_an_empty_token_is_refused_at_start_naming_the_variable(tmp_path, env):
    server = CdcServer(tmp_path, env, extra_env={"MILVUS_CDC_API_TOKEN": " "})
    with pytest.raises(RuntimeError, match="exited"):
        server.start()
    assert "MILVUS_CDC_API_TOKEN is empty" in server.log.read_text()


def test_a_token_file_is_read_and_a_wrong_token_is_logged_with_the_peer_and_counted(tmp_path, env):
    token = secrets.token_hex(16)
    token_file = tmp_path / "api-token"
    token_file.write_text(token + "\n")
    server = CdcServer(tmp_path, env)
    server.config.write_text(server.config.read_text().replace(
        "[source]\n", f'[api]\ntoken_file = "{token_file}"\n[source]\n'))
    server.token = token
    server.start()
    try:
        assert server.request("GET", "/v1/tasks")[0] == 200
        before = refused(server)["token"]
        status, reply = server.request("GET", "/v1/tasks", headers={"authorization": "Bearer wrong"})
        assert status == 401, reply
        assert refused(server)["token"] == before + 1
        log = server.log.read_text()
        assert "wrong bearer token" in log and "peer=127.0.0.1:" in log, log[-2000:]
        assert "Bearer wrong" not in log and token not in log
    finally:
        server.stop()


def test_no_secret_leaves_the_appliance_and_its_files_are_private(tmp_path, env, source, target, names):
    """A run with recognizable credentials, then every output is searched for them."""
    target_password = f"Canary-{secrets.token_hex(8)}"
    api_token = f"ApiCanary-{secrets.token_hex(8)}"
    server = CdcServer(tmp_path, env, extra_env={"MILVUS_CDC_API_TOKEN": api_token}).start()
    outputs = []
    try:
        name = names("secret")
        status, reply = server.post("create", {
            "task_id": "secret-task",
            "milvus_connect_param": {"uri": target.uri, "token": f"root:{target_password}"},
            "collection_infos": [{"name": name}],
        })
        assert status == 200, reply
        sch = schema(int64_pk(), FieldSchema("vec", DataType.FLOAT_VECTOR, dim=8))
        create_collection(source, name, sch)
        insert(source, name, make_rows(sch, range(500), seed=3))
        assert_replicated(source, target, name, timeout=120)
        # Every reply a client can get, errors included.
        for method, path, body in [
            ("GET", "/v1/tasks", None), ("GET", "/v1/tasks/secret-task", None),
            ("GET", "/v1/tasks/secret-task/positions", None), ("GET", "/v1/status", None),
            ("GET", "/openapi.json", None), ("GET", "/metrics", None),
            ("POST", "/cdc", {"request_type": "get", "request_data": {"task_id": "secret-task"}}),
            ("POST", "/cdc", {"request_type": "list", "request_data": {}}),
            # A conflicting create and an invalid target, both with the credential.
            ("POST", "/cdc", {"request_type": "create", "request_data": {
                "task_id": "secret-task", "collection_infos": [{"name": "other"}],
                "milvus_connect_param": {"uri": target.uri, "token": f"root:{target_password}"}}}),
            ("POST", "/cdc", {"request_type": "create", "request_data": {
                "task_id": "bad-target", "collection_infos": [{"name": "x"}],
                "milvus_connect_param": {"uri": "ftp://nowhere", "token": f"root:{target_password}"}}}),
        ]:
            outputs.append((path, reply_text(server, method, path, body)))
        cli = subprocess.run([str(BINARY), "task", "--server", f"http://127.0.0.1:{server.port}",
                              "--token", api_token, "get", "secret-task"], capture_output=True, text=True)
        outputs.append(("task get", cli.stdout + cli.stderr))
    finally:
        server.stop()
    data = tmp_path / "data"
    for args in (["dump", "--data-dir", str(data)], ["dump", "--data-dir", str(data), "--json"]):
        result = subprocess.run([str(BINARY), *args], capture_output=True, text=True, check=True)
        assert "secret-task" in result.stdout
        outputs.append((" ".join(args[:1] + args[3:]), result.stdout + result.stderr))
    outputs.append(("server log", server.log.read_text()))
    for where, text in outputs:
        assert target_password not in text, f"the target password is in {where}"
    for where, text in outputs[:-1]:
        # The CLI was given the API token on its command line; nothing may echo it back.
        assert api_token not in text, f"the API token is in {where}"
    assert api_token not in outputs[-1][1], "the API token is in the server log"

    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    for path in data.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_the_broker_token_is_in_no_reply_and_no_log_line(tmp_path, env, target):
    """Pulsar's token goes to the broker only: not into a reply, an error, or the log."""
    if "PULSAR_URL" not in env:
        pytest.skip("the Pulsar testbed is not up: run scripts/testbed up --pulsar")
    broker_token = f"BrokerCanary-{secrets.token_hex(8)}"
    server = CdcServer(tmp_path, env, pulsar_url=env["PULSAR_URL"],
                       extra_env={"MILVUS_CDC_PULSAR_TOKEN": broker_token}).start()
    try:
        replies = [reply_text(server, "POST", "/cdc", {"request_type": "create", "request_data": {
            "task_id": "broker-secret", "milvus_connect_param": {"uri": target.uri, "token": ""},
            "collection_infos": [{"name": "nothing_here"}]}})]
        for path in ("/v1/tasks", "/v1/tasks/broker-secret", "/v1/tasks/broker-secret/positions",
                     "/v1/status", "/metrics"):
            replies.append(reply_text(server, "GET", path, None))
    finally:
        server.stop()
    for text in replies + [server.log.read_text()]:
        assert broker_token not in text


def test_dump_blanks_every_secret_of_a_task_and_the_journal_keeps_them(tmp_path, env, target):
    """The target's token and the password users get (`rbac.user_password`): shown by no
    `dump`, yet kept, so the task still has them after a restart."""
    token, password = f"TokenCanary-{secrets.token_hex(8)}", f"RbacCanary-{secrets.token_hex(8)}"
    server = CdcServer(tmp_path, env).start()
    try:
        status, reply = server.request("POST", "/v1/tasks", {
            "task_id": "secrets", "milvus_connect_param": {"uri": target.uri, "token": f"root:{token}"},
            "collection_infos": [{"name": "nothing_here"}], "rbac": {"user_password": password}})
        assert status == 201, reply
        assert reply["rbac"] == {"makes_users": True} and reply["milvus_connect_param"]["token"] == ""
    finally:
        server.stop()
    data = str(tmp_path / "data")
    for args in (["dump", "--data-dir", data], ["dump", "--data-dir", data, "--json"]):
        shown = subprocess.run([str(BINARY), *args], capture_output=True, text=True, check=True).stdout
        task_line = next(line for line in shown.splitlines() if "secrets" in line)
        assert token not in shown and password not in shown, task_line
        assert '"token":"***"' in task_line and '"user_password":"***"' in task_line, task_line
    raw = (tmp_path / "data" / "journal.redb").read_bytes()
    assert token.encode() in raw and password.encode() in raw, "the journal keeps both"
    server.start()
    try:
        assert server.request("GET", "/v1/tasks/secrets")[1]["rbac"] == {"makes_users": True}
    finally:
        server.stop()


def pulsar_server(tmp_path, env, **extra_env) -> CdcServer:
    if "PULSAR_URL" not in env:
        pytest.skip("the Pulsar testbed is not up: run scripts/testbed up --pulsar")
    return CdcServer(tmp_path, env, pulsar_url=env["PULSAR_URL"], extra_env=extra_env)


def test_the_pulsar_connection_frames_with_the_token_are_logged_at_no_level(tmp_path, env, target):
    """The pulsar crate logs every frame it sends at trace, `CommandConnect` with its auth data
    (bytes, so the token would show as their numbers): not even `pulsar=trace` lets it out."""
    broker_token = f"BrokerCanary-{secrets.token_hex(8)}"
    server = pulsar_server(tmp_path, env, MILVUS_CDC_PULSAR_TOKEN=broker_token,
                           RUST_LOG="info,pulsar=trace").start()
    try:
        status, reply = server.post("create", {"task_id": "traced", "collection_infos": [{"name": "nothing_here"}],
                                               "milvus_connect_param": {"uri": target.uri}})
        assert status == 200, reply
    finally:
        server.stop()
    log = server.log.read_text()
    as_bytes = ", ".join(str(b) for b in broker_token.encode())
    assert "pulsar::" in log, "the pulsar crate's trace events are logged: the test sees what it would print"
    assert broker_token not in log and as_bytes not in log
    assert "CommandConnect" not in log and "auth_data" not in log


def test_an_empty_pulsar_token_is_refused_at_start_not_taken_for_no_authentication(tmp_path, env):
    server = pulsar_server(tmp_path, env, MILVUS_CDC_PULSAR_TOKEN="")
    with pytest.raises(RuntimeError, match="exited"):
        server.start()
    assert "the Pulsar token in MILVUS_CDC_PULSAR_TOKEN is empty" in server.log.read_text()
