"""Reading back what a topic received during a test, from a point in time on."""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition

from mailintake.contracts import get_topic


def read_topic(bootstrap: str, topic: str, since_ms: int, keep, until=lambda found: False, timeout: float = 30) -> list:
    """Records of ``topic`` written since ``since_ms`` that ``keep`` returns non-None for,
    read until ``until(found)`` holds or ``timeout`` passes."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=1000)
    partitions = [TopicPartition(topic, p) for p in range(get_topic(topic).partitions)]
    consumer.assign(partitions)
    starts = consumer.offsets_for_times({tp: since_ms for tp in partitions})
    for tp in partitions:
        if starts[tp] is None:
            consumer.seek_to_end(tp)
        else:
            consumer.seek(tp, starts[tp].offset)
    found: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(found):
            for message in consumer:
                kept = keep(message)
                if kept is not None:
                    found.append(kept)
    finally:
        consumer.close()
    return found
