"""Data the broker no longer has: the task fails, naming the channel and the positions; it never
jumps over what is gone. The topic has its own prefix, so the source Milvus never sees it.

The topic is deleted under the running appliance, and while it is stopped. Deleted under a
running consumer, the testbed's broker (Tansu) answers its next fetch of the topic with a zero
topic id and a current leader tagged on the partition; librdkafka (2.12 to 2.16, the bundled one
included) turns that into a leader update looked up by a NULL topic name and crashes (SIGSEGV in
`rd_kafka_metadata_cache_find`; a bare confluent-kafka consumer crashes the same way). Apache
Kafka echoes the topic id, so this is the testbed broker's doing. Where it happens, the test
restarts the appliance, as its service manager would, and the task must then fail all the same."""

import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cdc import CdcServer
from test_bad_input import time_tick
from workload import wait_until


@pytest.mark.parametrize("while_running", [True, False], ids=["running", "stopped"])
def test_a_topic_deleted_and_created_again_fails_the_task_naming_channel_and_positions(tmp_path, env, target,
                                                                                       while_running):
    brokers, admin, prefix, topic, producer = topic_with_its_first_tick(env, "lost")
    server = CdcServer(tmp_path, env, channel_prefix=prefix).start()
    try:
        task = read_through_tick_6(server, producer, topic, target)
        if not while_running:
            server.stop()

        delete_topic(admin, topic)
        # The topic again, from offset 0, by a new producer: the first one remembers the old topic.
        producer = Producer({"bootstrap.servers": brokers})
        producer.produce(topic, time_tick(7), partition=0)
        assert producer.flush(10) == 0
        consumer = Consumer({"bootstrap.servers": brokers, "group.id": prefix})

        def recreated() -> list:
            try:
                return [] if consumer.get_watermark_offsets(TopicPartition(topic, 0), 5, cached=False) == (0, 1) \
                    else ["not yet"]
            except KafkaException as err:
                return [err]
        wait_until("the topic to be there again", recreated, timeout=30)
        consumer.close()
        if not while_running:
            server.start()

        def failed() -> list:
            # The live deletion may crash librdkafka in the appliance at any moment until then
            # (see the module doc): it is started again, and the task must fail all the same.
            if while_running and server.proc.poll() is not None:
                assert server.proc.returncode == -11, f"the appliance exited with {server.proc.returncode}"
                print("the appliance crashed in librdkafka (see the module doc); restarted")
                server.start()
            try:
                reply = server.request("GET", f"/v1/tasks/{task}")[1]
            except OSError as err:
                # The crash may come between the check above and this request (its connection
                # reset): the next turn finds the appliance gone and starts it again.
                if not while_running:
                    raise
                return [f"asking the appliance failed: {err!r}"]
            return [] if reply["state"] == "Failed" else [reply]
        wait_until("the task to fail", failed, timeout=30)
        reason = server.request("GET", f"/v1/tasks/{task}")[1]["reason"]
        assert topic in reason and "no longer has" in reason and "next_offset=6" in reason, reason
    finally:
        server.stop()
        admin.delete_topics([topic])[topic].result(10)


def test_a_topic_created_again_and_grown_past_the_position_while_stopped_fails_the_task(tmp_path, env, target):
    """The broker's bounds cannot tell this one: the new topic holds the stored offset and more.
    The message before the position is read again and is not the one the task read there."""
    brokers, admin, prefix, topic, producer = topic_with_its_first_tick(env, "grown")
    server = CdcServer(tmp_path, env, channel_prefix=prefix).start()
    try:
        task = read_through_tick_6(server, producer, topic, target)
        server.stop()

        delete_topic(admin, topic)
        # The topic again, written past the task's offset (6) by a new producer.
        producer = Producer({"bootstrap.servers": brokers})
        for ts in range(100, 110):
            producer.produce(topic, time_tick(ts), partition=0)
            assert producer.flush(10) == 0
        consumer = Consumer({"bootstrap.servers": brokers, "group.id": prefix})

        def grown() -> list:
            try:
                marks = consumer.get_watermark_offsets(TopicPartition(topic, 0), 5, cached=False)
                return [] if marks == (0, 10) else [marks]
            except KafkaException as err:
                return [err]
        wait_until("the topic to be there again, grown past the offset", grown, timeout=30)
        consumer.close()
        server.start()

        def failed() -> list:
            reply = server.request("GET", f"/v1/tasks/{task}")[1]
            return [] if reply["state"] == "Failed" else [reply]
        wait_until("the task to fail", failed, timeout=30)
        reason = server.request("GET", f"/v1/tasks/{task}")[1]["reason"]
        assert topic in reason and "not the one the task read there" in reason and "next_offset=6" in reason, reason
        channels = server.request("GET", f"/v1/tasks/{task}/positions")[1]["channels"]
        assert [c.get("tick") for c in channels if c["channel"] == topic] == [6], "nothing of the new topic staged"
    finally:
        server.stop()
        admin.delete_topics([topic])[topic].result(10)


def topic_with_its_first_tick(env, kind: str) -> tuple[str, AdminClient, str, str, Producer]:
    """A DML topic of a prefix of its own (`{kind}` and a random suffix) holding a time tick at
    1: the brokers, an admin client, the prefix, the topic and the producer that wrote it."""
    brokers = env.get("KAFKA_BROKERS", "127.0.0.1:9092")
    prefix = f"{kind}{uuid.uuid4().hex[:6]}"
    topic = f"{prefix}-rootcoord-dml_0"
    producer = Producer({"bootstrap.servers": brokers})
    producer.produce(topic, time_tick(1), partition=0)
    producer.flush(10)
    return brokers, AdminClient({"bootstrap.servers": brokers}), prefix, topic, producer


def read_through_tick_6(server: CdcServer, producer: Producer, topic: str, target) -> str:
    """A task on `*`, and the ticks 2 to 6 on `topic` (which holds tick 1), read by it."""
    status, reply = server.post("create", {"milvus_connect_param": {"uri": target.uri},
                                           "collection_infos": [{"name": "*"}]})
    assert status == 200, reply
    task = reply["data"]["task_id"]
    for ts in range(2, 7):
        producer.produce(topic, time_tick(ts), partition=0)
        producer.flush(10)

    def read_all() -> list:
        channels = server.request("GET", f"/v1/tasks/{task}/positions")[1]["channels"]
        mine = [c for c in channels if c["channel"] == topic]
        return [] if mine and mine[0].get("tick") == 6 else [mine]
    wait_until("the task to read the topic", read_all, timeout=30)
    return task


def delete_topic(admin: AdminClient, topic: str) -> None:
    """Deletes `topic` and waits until the broker lists it no more, before it is made again
    (all topics are listed: asking for this one by name could have the broker create it)."""
    admin.delete_topics([topic])[topic].result(10)
    wait_until("the topic to be gone",
               lambda: [topic] if topic in admin.list_topics(timeout=5).topics else [], timeout=30)
