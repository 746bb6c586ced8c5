"""Bad messages on a real DML topic: each is logged with its channel and offset, counted, passed
over, and the messages around it are still read. The topic uses its own prefix, so the source
Milvus never sees the garbage."""

import subprocess
import time
import uuid

from confluent_kafka import Producer
from pymilvus.grpc_gen import common_pb2

from cdc import BINARY, CdcServer


def time_tick(ts: int) -> bytes:
    header = common_pb2.MsgHeader()
    header.base.msg_type = common_pb2.MsgType.TimeTick
    header.base.timestamp = ts
    return header.SerializeToString()


def test_bad_messages_are_logged_counted_and_skipped(tmp_path, env, target):
    prefix = f"junk{uuid.uuid4().hex[:6]}"
    topic = f"{prefix}-rootcoord-dml_0"
    insert = common_pb2.MsgHeader()
    insert.base.msg_type = common_pb2.MsgType.Insert
    truncated = insert.SerializeToString() + b"\x6a\x10abc"  # field 13 claims 16 bytes, has 3
    unknown = common_pb2.MsgHeader()
    unknown.base.msg_type = 99_999
    payloads = [time_tick(5), b"not a milvus message \xff\xfe", truncated, unknown.SerializeToString(), b"",
                time_tick(9)]

    producer = Producer({"bootstrap.servers": env.get("KAFKA_BROKERS", "127.0.0.1:9092")})
    producer.produce(topic, b"topic", partition=0)  # creates the topic, at offset 0, before the task starts
    producer.flush(10)
    server = CdcServer(tmp_path, env, channel_prefix=prefix).start()
    server.post("create", {"milvus_connect_param": {"uri": target.uri}, "collection_infos": [{"name": "*"}]})
    for payload in payloads:
        producer.produce(topic, payload, partition=0)  # Milvus uses partition 0 only
    producer.flush(10)

    deadline = time.monotonic() + 30
    while server.metrics().get("milvus_cdc_messages_rejected_total", 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.metrics()["milvus_cdc_messages_rejected_total"] == 4  # the empty one too
    assert server.proc.poll() is None, "the appliance must not die on bad input"
    server.stop()

    log = server.log.read_text()
    for offset in (2, 3, 4, 5):
        assert f"offset={offset}" in log and topic in log, f"offset {offset} not logged:\n{log[-2000:]}"
    dump = subprocess.run([str(BINARY), "dump", "--data-dir", str(tmp_path / "data"), "--channel", topic],
                          capture_output=True, text=True, check=True).stdout
    # Every message was passed: the next offset is after the last one, and the last tick was read.
    assert f"{topic} next=kafka next_offset=7 tick=9" in dump, dump
