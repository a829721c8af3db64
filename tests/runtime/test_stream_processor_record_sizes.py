"""Records up to the topics' 2 MiB limit get through the stream processor's producer.

The topic contracts allow 2 MiB per record (``max.message.bytes`` in ``schemas/``), and a
mail up to 1.5 MiB travels inline on ``mail.raw``. kafka-python refuses a record over its
``max_request_size`` (1 MiB by default) before it reaches the broker; the classifier then
stopped on such a record and, restarted, stopped on it again. Here a stream processor on
the real broker passes on a 1.5 MiB output and dead-letters a 1.2 MiB record it cannot
decode.
"""

from __future__ import annotations

import os
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from mailintake.contracts import InvalidMessage, decode_record
from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.producer_sizes import MAX_REQUEST_BYTES
from mailintake.runtime.stream_processor import DLQ_TOPIC, Output, StreamProcessor
from tests.kafka_topics import topics_for_one_test
from tests.running_processor import ProcessorThread

pytestmark = pytest.mark.stack

MIB = 1024 * 1024
TOPIC_LIMIT = {"max.message.bytes": str(2 * MIB)}


def read_one(bootstrap: str, topic: str, key: bytes, timeout: float = 60) -> bytes | None:
    """The value of the first record keyed ``key`` in ``topic`` (partition 0 for a test topic)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=1000)
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or {0}]
    consumer.assign(partitions)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if record.key == key:
                        return record.value
        return None
    finally:
        consumer.close()


def test_records_up_to_the_topic_limit_are_produced_and_dead_lettered(stack, unique):
    source, output = f"test.sizes.in.{unique}", f"test.sizes.out.{unique}"
    big_output = os.urandom(3 * MIB // 2)
    undecodable = b"not avro " + os.urandom(6 * MIB // 5)

    def decode(value: bytes) -> bytes:
        if value.startswith(b"not avro"):
            raise InvalidMessage("not a record of this topic", topic=source)
        return value

    def process(value: bytes, _message) -> list[Output]:
        return [Output(output, b"big", big_output)]

    with topics_for_one_test(stack.kafka_bootstrap, source, output, configs=TOPIC_LIMIT):
        processor = StreamProcessor(
            service="test",
            source_topic=source,
            group_id=f"sizes-{unique}",
            bootstrap_servers=stack.kafka_bootstrap,
            decode=decode,
            process=process,
            health=Health(),
        )
        worker = ProcessorThread(processor)
        producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, max_request_size=MAX_REQUEST_BYTES)
        producer.send(source, key=b"first", value=b"a small record that becomes a big one", partition=0)
        producer.send(source, key=b"second", value=undecodable, partition=0)
        producer.flush()
        producer.close()
        try:
            produced = read_one(stack.kafka_bootstrap, output, b"big")
            letter_value = read_one(stack.kafka_bootstrap, DLQ_TOPIC, f"{source}:0:1".encode())
        finally:
            worker.stop()
    assert not worker.failures, f"the processor stopped: {worker.failures[0]!r}"
    assert produced == big_output, "the 1.5 MiB output never arrived"
    assert letter_value is not None, "the 1.2 MiB record was not dead-lettered"
    letter = decode_record(DLQ_TOPIC, letter_value)
    assert letter.original_value == undecodable and letter.source_offset == 1
