"""How long the testbed's Kafka broker keeps a written message from a consumer waiting for it,
by the consumer's `fetch.wait.max.ms`: one message at a time, at random intervals, timed from
the producer's flush until the consumer has it.

    .venv/bin/python benches/broker_fetch_latency.py [BROKERS]   (default 127.0.0.1:9092)

A broker that answers a waiting fetch as soon as data arrives (Apache Kafka) shows a few
milliseconds whatever the wait; one that looks for data only now and then shows more with
longer waits. Every reader of the testbed's channels pays it: the appliance's and Milvus's own.
"""

import random
import statistics
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

brokers = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9092"
topic = f"fetch_latency_{time.time_ns()}"
admin = AdminClient({"bootstrap.servers": brokers})
admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
producer = Producer({"bootstrap.servers": brokers, "linger.ms": 0})
try:
    for wait_ms in (500, 100, 10):
        consumer = Consumer({"bootstrap.servers": brokers, "group.id": "fetch-latency", "enable.auto.commit": False,
                             "fetch.wait.max.ms": wait_ms, "socket.nagle.disable": True})
        _, end = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, end)])
        consumer.poll(0.5)
        waits = []
        for _ in range(30):
            time.sleep(random.uniform(0.05, 0.6))
            sent = time.monotonic()
            producer.produce(topic, b"x" * 1000)
            producer.flush()
            while (message := consumer.poll(5)) is None or message.error():
                pass
            waits.append(time.monotonic() - sent)
        consumer.close()
        print(f"fetch.wait.max.ms={wait_ms}: written to read p50 {statistics.median(waits) * 1000:.0f} ms, "
              f"max {max(waits) * 1000:.0f} ms", flush=True)
finally:
    admin.delete_topics([topic])
