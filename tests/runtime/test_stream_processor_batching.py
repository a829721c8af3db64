"""The stream processor's outputs of one consumed batch share record batches.

Each record batch costs a future, a sequence number and its share of a produce request.
When the classifier ran on kafka-python with that client's defaults (16 KiB batches, 5 ms
linger), a request held two or three decisions of a few KiB, and the classifier used
0.10-0.24 CPU s per 1,000 mails more (BENCHMARKS.md, the end-to-end pipeline). Here one
consumed batch of 300 records becomes 300 outputs of 4 KiB on one partition; the
processor's own count of the record batches it handed to Kafka tells how many went per batch.
"""

from __future__ import annotations

import os

import pytest
from kafka import KafkaProducer
from prometheus_client import REGISTRY

from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.stream_processor import Output, StreamProcessor
from tests.kafka_topics import topics_for_one_test
from tests.running_processor import ProcessorThread
from tests.waiting import wait_for

pytestmark = pytest.mark.stack

RECORDS = 300


def produced_by(service: str, topic: str) -> float:
    """Outputs the processor counted as acknowledged (its metric)."""
    return REGISTRY.get_sample_value("mailintake_records_produced_total", {"service": service, "topic": topic}) or 0


def record_batches_of(service: str) -> float:
    """Record batches the processor handed to Kafka (its metric)."""
    return REGISTRY.get_sample_value("mailintake_record_batches_produced_total", {"service": service}) or 0


def test_the_outputs_of_a_batch_go_many_to_a_request(stack, unique):
    source, output = f"test.batching.in.{unique}", f"test.batching.out.{unique}"
    body = os.urandom(4096)
    service = f"batching-{unique}"
    with topics_for_one_test(stack.kafka_bootstrap, source, output):
        producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
        for number in range(RECORDS):
            producer.send(source, key=str(number).encode(), value=b"x", partition=0)
        producer.flush()
        producer.close()
        processor = StreamProcessor(
            service=service,
            source_topic=source,
            group_id=f"batching-{unique}",
            bootstrap_servers=stack.kafka_bootstrap,
            decode=lambda value: value,
            process=lambda value, message: [Output(output, message.key, body)],
            health=Health(),
        )
        worker = ProcessorThread(processor)
        try:
            wait_for(lambda: produced_by(service, output) >= RECORDS or worker.failures, timeout=60)
        finally:
            worker.stop()
    assert not worker.failures, f"the processor stopped: {worker.failures[0]!r}"
    assert produced_by(service, output) == RECORDS
    # A batch per output would be 1; a 1 MiB batch holds some 250 of these records.
    records_per_batch = RECORDS / record_batches_of(service)
    assert records_per_batch >= 30, records_per_batch
