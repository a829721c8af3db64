"""A partition taken away while the stream processor works through a batch: the batch
still ends, its outputs are produced, and only the partitions still held are committed.

aiokafka rebalances in the background of the processor's event loop, so a batch can
outlive the assignment it was fetched under. Committing the moved partition would fail
(aiokafka refuses offsets of partitions it does not hold) or, worse, would overwrite its
new owner's progress; the processor leaves it to the new owner, which reads the batch's
records of it again (a replay the ticketer's ledger absorbs).

Here a processor takes a batch from both partitions of a topic and handles it slowly;
meanwhile a second member joins the group and the group gives it one of the partitions.
"""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from prometheus_client import REGISTRY

from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.stream_processor import Output, StreamProcessor
from tests.kafka_topics import topics_for_one_test
from tests.running_processor import ProcessorThread
from tests.waiting import wait_for

pytestmark = pytest.mark.stack

PER_PARTITION = 25
SECONDS_PER_RECORD = 0.2  # 50 records: a batch of 10 s, room for the group to rebalance


def metric(name: str, service: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": service, **labels}) or 0


def test_a_partition_moved_during_a_batch_is_left_to_its_new_owner(stack, unique):
    source, output = f"test.rebalance.in.{unique}", f"test.rebalance.out.{unique}"
    service, group = f"rebalance-{unique}", f"rebalance-{unique}"
    handled = []

    def slowly(value: bytes, message) -> list[Output]:
        time.sleep(SECONDS_PER_RECORD)
        handled.append((message.partition, message.offset))
        return [Output(output, value, value)]

    with topics_for_one_test(stack.kafka_bootstrap, source, output, partitions=2):
        producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
        for number in range(PER_PARTITION):
            for partition in (0, 1):
                producer.send(source, key=f"{partition}-{number}".encode(), value=b"x", partition=partition)
        producer.flush()
        producer.close()
        processor = StreamProcessor(
            service=service, source_topic=source, group_id=group, bootstrap_servers=stack.kafka_bootstrap,
            decode=lambda value: value, process=slowly, health=Health(),
        )
        worker = ProcessorThread(processor)
        newcomer = None
        try:
            assert wait_for(lambda: handled or worker.failures, timeout=60) and not worker.failures
            first_batch = {partition for partition, _offset in handled}  # the batch's first record so far
            newcomer = KafkaConsumer(
                source, bootstrap_servers=stack.kafka_bootstrap, group_id=group, enable_auto_commit=False,
                partition_assignment_strategy=[RoundRobinPartitionAssignor], max_poll_records=1,
            )
            # poll() joins the group; it holds what the rebalance gives it, without committing.
            moved = wait_for(lambda: newcomer.poll(timeout_ms=200) is not None and newcomer.assignment(), timeout=60)
            assert moved, "the second member never got a partition"
            done = wait_for(
                lambda: metric("mailintake_records_produced_total", service, topic=output) >= 2 * PER_PARTITION
                or worker.failures,
                timeout=60,
            )
            assert done and not worker.failures, worker.failures
            lost = wait_for(lambda: metric("mailintake_offset_commits_lost_to_rebalance_total", service), timeout=30)
            committed = {p: newcomer.committed(TopicPartition(source, p)) for p in (0, 1)}
        finally:
            if newcomer is not None:
                newcomer.close(autocommit=False)
            worker.stop()
    assert not worker.failures, f"the processor stopped: {worker.failures[0]!r}"
    assert first_batch, "the processor handled nothing before the newcomer joined"
    (moved_partition,) = {tp.partition for tp in moved}
    kept_partition = 1 - moved_partition
    assert lost == 1, "the batch's commit did not leave the moved partition out"
    # Nothing of the moved partition was committed by the processor: its new owner replays it.
    assert committed[moved_partition] is None
    assert committed[kept_partition] == PER_PARTITION
