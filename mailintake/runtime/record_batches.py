"""A service's outputs handed to Kafka as whole record batches, one per partition.

faust's ``Producer.send`` and aiokafka's ``send`` below it take one record at a time:
each call waits for the topic's metadata, picks a partition, finds or opens the
partition's batch and makes a future, about 10 us of CPU a record here (and faust adds
its own). A ticketer batch of a few hundred mails has two or three outputs a mail, a
classifier batch one. aiokafka's ``create_batch``/``send_batch`` builds a batch directly
(its record builder is compiled) and makes one future per batch, about 3 us a record
(BENCHMARKS.md, 2026-12-02).

What Kafka receives is the same as from ``send``: every record on the partition it names,
or else the one the producer's partitioner picks for its key, and within a partition in
the order of ``outputs``. A batch that fills is sent and another started; a record too
large for an empty batch still goes alone, as ``send`` sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaProducer
from aiokafka.producer.message_accumulator import BatchBuilder

from mailintake.runtime.key_partitioning import aiokafka_key_partitioner
from mailintake.runtime.producer_sizes import MAX_REQUEST_BYTES, PRODUCER_BATCH_BYTES

if TYPE_CHECKING:  # the stream processor hands its outputs here; a runtime import would be circular
    from mailintake.runtime.stream_processor import Output


def batch_producer(bootstrap_servers: list[str], client_id: str, max_request_size: int = MAX_REQUEST_BYTES) -> AIOKafkaProducer:
    """An idempotent acks=all producer (not started) for :func:`send_in_batches`, keyed
    records placed as every other producer of the project places them."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        # A batch fills at this size and another starts; a record larger still goes alone,
        # up to the request limit.
        max_batch_size=PRODUCER_BATCH_BYTES,
        max_request_size=max_request_size,
        partitioner=aiokafka_key_partitioner,
    )


async def key_partitions(producer: AIOKafkaProducer, topics: Iterable[str]) -> Callable[[str, bytes | None], int]:
    """The partition of a key in each of ``topics``, as the producer's partitioner picks it.

    Waits for the topics' metadata, as ``send`` would.
    """
    partitions = {topic: sorted(await producer.partitions_for(topic)) for topic in set(topics)}

    def partition_for_key(topic: str, key: bytes | None) -> int:
        return aiokafka_key_partitioner(key, partitions[topic], partitions[topic])

    return partition_for_key


async def send_in_batches(
    producer: AIOKafkaProducer, outputs: Sequence[Output], partition_for_key: Callable[[str, bytes | None], int]
) -> list[asyncio.Future]:
    """Hand ``outputs`` to ``producer`` as record batches; return the batches' futures,
    each done when Kafka acknowledged (or refused) its batch.

    ``partition_for_key(topic, key)`` is the partition of an output that names none; the
    topics' metadata must be known already (``producer.partitions_for``).
    """
    builders: dict[tuple[str, int], BatchBuilder] = {}
    sent: list[asyncio.Future] = []
    for output in outputs:
        partition = output.partition if output.partition is not None else partition_for_key(output.topic, output.key)
        where = (output.topic, partition)
        builder = builders.get(where)
        if builder is None:
            builder = builders[where] = producer.create_batch()
        if builder.append(key=output.key, value=output.value, timestamp=None) is None:
            sent.append(await producer.send_batch(builder, output.topic, partition=partition))
            builder = builders[where] = producer.create_batch()
            # An empty batch takes any one record (aiokafka's builder admits the first
            # whatever its size), so this second append cannot fail.
            builder.append(key=output.key, value=output.value, timestamp=None)
    for (topic, partition), builder in builders.items():
        sent.append(await producer.send_batch(builder, topic, partition=partition))
    return sent
