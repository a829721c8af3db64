"""Outputs sent as record batches land where and in the order ``send`` puts them."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from mailintake.runtime.key_partitioning import key_partition
from mailintake.runtime.record_batches import send_in_batches
from mailintake.runtime.stream_processor import Output
from tests.kafka_topics import topics_for_one_test

pytestmark = pytest.mark.stack

PARTITIONS = 3


def read_back(bootstrap: str, topic: str, expected: int) -> dict[int, list[tuple[bytes | None, bytes]]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    found: dict[int, list[tuple[bytes | None, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for n, record in enumerate(consumer, 1):
        found[record.partition].append((record.key, record.value))
        if n == expected:
            break
    consumer.close()
    return found


def test_each_record_lands_on_its_partition_in_order_and_a_full_batch_makes_another(stack, unique):
    topic = f"record-batches-{unique}"
    outputs = [Output(topic, f"key-{i % 7}".encode(), f"value {i} ".encode() * 20) for i in range(60)]
    outputs.insert(10, Output(topic, b"pinned", b"to partition 2", partition=2))
    outputs.insert(30, Output(topic, b"key-1", b"x" * 5000))  # more than a whole batch holds

    async def send() -> int:
        # Batches of 1 KiB: the 60 records of ~200 bytes need several per partition.
        producer = AIOKafkaProducer(
            bootstrap_servers=stack.kafka_bootstrap, acks="all", enable_idempotence=True, max_batch_size=1024
        )
        await producer.start()
        try:
            await producer.partitions_for(topic)
            futures = await send_in_batches(producer, outputs, lambda _topic, key: key_partition(key, PARTITIONS))
            await asyncio.gather(*futures)
            return len(futures)
        finally:
            await producer.stop()

    with topics_for_one_test(stack.kafka_bootstrap, topic, partitions=PARTITIONS):
        batches = asyncio.run(send())
        found = read_back(stack.kafka_bootstrap, topic, len(outputs))

    expected: dict[int, list[tuple[bytes | None, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for output in outputs:
        partition = output.partition if output.partition is not None else key_partition(output.key, PARTITIONS)
        expected[partition].append((output.key, output.value))
    assert found == expected
    assert batches > PARTITIONS, "no batch filled up, so the test did not cover a second batch"
