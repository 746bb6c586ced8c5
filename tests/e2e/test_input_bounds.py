"""What a client may send: names as Milvus takes them, lists and ids with bounds, each refusal a
400 naming the field and its problem (never the whole input echoed back), and nothing stored.
The same on `POST /cdc`, on REST and through `milvus-cdc task`; every error, 413 included, in
the JSON error body."""

import socket
import subprocess
import threading
import time

import pytest

from cdc import BINARY

COLLECTION_RULE = ("a collection name is a letter or '_', then letters, digits or '_' (as Milvus takes them), "
                   'or "*"')
DATABASE_RULE = "a database name is a letter or '_', then letters, digits or '_' (as Milvus takes them)"
TASK_ID_RULE = "a task id is 1 to 128 letters, digits, '.', '_' or '-'"
TOO_MANY_NAMES = ("brings the collection names of this task to {}: a task names at most 4096 in collection_infos, "
                  "db_collections, exclude_db_collections and name_mapping together (name a database, or \"*\", "
                  "instead)")


def body(target_uri: str, **extra) -> dict:
    return {"milvus_connect_param": {"uri": target_uri}, "collection_infos": [{"name": "*"}], **extra}


def refused_on_both_apis(server, create: dict, message: str) -> None:
    """The create is refused with `message` on REST and on `POST /cdc`, and no task is stored."""
    assert server.request("POST", "/v1/tasks", create) == (400, {"code": 400, "message": message})
    assert server.post("create", create) == (400, {"code": 400, "message": message})
    assert server.request("GET", "/v1/tasks") == (200, {"tasks": []})


def test_a_collection_name_milvus_would_refuse_is_a_400_naming_it_and_nothing_is_stored(server, target):
    long_name = "c" * 100_000
    refused_on_both_apis(server, body(target.uri, collection_infos=[{"name": "ok"}, {"name": long_name}]),
                         "collection_infos[1].name is 100000 characters long: at most 255")
    refused_on_both_apis(server, body(target.uri, collection_infos=[{"name": "9lives"}]),
                         f'collection_infos[0].name "9lives" starts with \'9\': {COLLECTION_RULE}')
    refused_on_both_apis(server, body(target.uri, collection_infos=[{"name": ""}]),
                         f"collection_infos[0].name is empty: {COLLECTION_RULE}")
    refused_on_both_apis(server, body(target.uri, collection_infos=[], db_collections={"sales": [{"name": "a b"}]}),
                         f'db_collections.sales[0].name "a b" holds \' \': {COLLECTION_RULE}')
    refused_on_both_apis(server, body(target.uri, db_collections={"my-db": [{"name": "*"}]}),
                         f'db_collections key "my-db" holds \'-\': {DATABASE_RULE}')
    refused_on_both_apis(server, body(target.uri, exclude_db_collections={"default": [{"name": "x;y"}]}),
                         f'exclude_db_collections.default[0].name "x;y" holds \';\': {COLLECTION_RULE}')
    refused_on_both_apis(server, body(target.uri, name_mapping=[{"source_db": "default", "col_mapping": {"a": "*"}}]),
                         f'name_mapping[0].col_mapping.a "*" starts with \'*\': {COLLECTION_RULE}')
    refused_on_both_apis(server, body(target.uri, name_mapping=[{"source_db": "d" * 300}]),
                         "name_mapping[0].source_db is 300 characters long: at most 255")

    # What Milvus takes is taken, `*` included: the longest name, and a pattern per database.
    status, task = server.request("POST", "/v1/tasks", body(target.uri, task_id="fits", collection_infos=[
        {"name": "_" + "a" * 254}], db_collections={"*": [{"name": "*"}]}))
    assert status == 201, task
    assert task["collection_infos"] == [{"name": "_" + "a" * 254}]


def test_more_collection_names_than_a_task_may_hold_are_a_400_naming_the_list(server, target):
    many = [{"name": f"c{i}"} for i in range(100_000)]
    refused_on_both_apis(server, body(target.uri, collection_infos=many),
                         "collection_infos " + TOO_MANY_NAMES.format(100_000))
    # The bound is on the names of the whole request.
    split = body(target.uri, collection_infos=many[:4000], exclude_db_collections={"default": many[4000:4100]})
    refused_on_both_apis(server, split, "exclude_db_collections.default " + TOO_MANY_NAMES.format(4100))
    databases = {f"db{i}": [{"name": "*"}] for i in range(65)}
    refused_on_both_apis(server, body(target.uri, db_collections=databases), "db_collections has 65 entries: at most 64")
    refused_on_both_apis(server, body(target.uri, milvus_connect_param={"uri": target.uri, "token": "t" * 5000}),
                         "milvus_connect_param.token is 5000 characters long: at most 4096")
    status, task = server.request("POST", "/v1/tasks", body(target.uri, task_id="at-bound", collection_infos=many[:4096]))
    assert status == 201 and len(task["collection_infos"]) == 4096, task


def test_the_task_command_prints_the_same_error_line(server, target):
    def create(*args):
        return subprocess.run([str(BINARY), "task", "--server", server.url(""), "create", "--target-uri", target.uri,
                               *args], capture_output=True, text=True, timeout=60)

    done = create("--collection", "ok", "--collection", "bad-name")
    assert (done.returncode, done.stderr) == (
        1, f'milvus-cdc: collection_infos[1].name "bad-name" holds \'-\': {COLLECTION_RULE} (HTTP 400)\n')
    done = create("--task-id", "t" * 200)
    assert (done.returncode, done.stderr) == (
        1, "milvus-cdc: task_id is 200 characters long: at most 128 (HTTP 400)\n")
    assert server.request("GET", "/v1/tasks") == (200, {"tasks": []})


ROUTES = [("GET", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/resume"), ("POST", "/skip"),
          ("POST", "/verify"), ("GET", "/positions")]


@pytest.mark.parametrize("method, rest", ROUTES)
def test_every_task_route_refuses_an_id_that_is_not_a_task_id_naming_its_problem(server, method, rest):
    status, reply = server.request(method, f"/v1/tasks/{'x' * 5000}{rest}", raw=b"{}" if rest == "/skip" else None)
    assert (status, reply) == (400, {"code": 400, "message": "task_id is 5000 characters long: at most 128"})
    status, reply = server.request(method, f"/v1/tasks/a%20b{rest}")
    assert (status, reply) == (400, {"code": 400, "message": f"task_id \"a b\" holds ' ': {TASK_ID_RULE}"})


@pytest.mark.parametrize("request_type", ["delete", "pause", "resume", "get", "position"])
def test_cdc_refuses_an_id_that_is_not_a_task_id_without_echoing_it(server, request_type):
    status, reply = server.post(request_type, {"task_id": "x" * 1_500_000})
    assert (status, reply) == (400, {"code": 400, "message": "task_id is 1500000 characters long: at most 128"})
    status, reply = server.post(request_type, {"task_id": "../t"})
    assert (status, reply) == (400, {"code": 400, "message": f'task_id "../t" holds \'/\': {TASK_ID_RULE}'})


def test_a_body_over_the_limit_gets_the_json_error_body(server):
    too_large = b"{" + b" " * (2 << 20) + b"}"
    for path in ("/cdc", "/v1/tasks", "/v1/tasks/t/skip", "/v1/tasks/t/verify"):
        status, reply = server.request("POST", path, raw=too_large)
        assert (status, reply) == (413, {"code": 413, "message": "the request body is larger than 2 MiB"}), path


def test_the_task_command_percent_encodes_ids_so_the_server_names_their_problem(server):
    def cli(*args):
        return subprocess.run([str(BINARY), "task", "--server", server.url(""), *args],
                              capture_output=True, text=True, timeout=60)

    for command in ("get", "pause", "resume", "delete", "positions"):
        done = cli(command, "a b/../c?d")
        assert (done.returncode, done.stderr) == (
            1, f"milvus-cdc: task_id \"a b/../c?d\" holds ' ': {TASK_ID_RULE} (HTTP 400)\n"), command
    done = subprocess.run([str(BINARY), "verify", "--server", server.url(""), "--task", "x/y"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (
        2, f"milvus-cdc: task_id \"x/y\" holds '/': {TASK_ID_RULE} (HTTP 400)\n")


def test_the_task_command_gives_up_on_a_server_that_does_not_answer():
    """A server that accepts the connection and never answers (a hung process, a stopped VM)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    try:
        started = time.monotonic()
        done = subprocess.run([str(BINARY), "task", "list", "--server", f"http://127.0.0.1:{port}", "--timeout", "2"],
                              capture_output=True, text=True, timeout=60)
        took = time.monotonic() - started
    finally:
        listener.close()
    assert (done.returncode, done.stderr) == (
        1, f"milvus-cdc: the milvus-cdc server at http://127.0.0.1:{port} did not answer within 2 s\n")
    assert took < 30, took
    assert accepted, "the CLI connected"
