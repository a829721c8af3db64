"""The project's murmur2 partitioning against the Kafka clients' own, on random keys."""

from __future__ import annotations

import random
from types import SimpleNamespace

import aiokafka.partitioner
import kafka.partitioner.default
import pytest

from mailintake.runtime.key_partitioning import aiokafka_key_partitioner, key_partition, murmur2


def random_keys(seed: int, count: int = 3000) -> list[bytes]:
    rng = random.Random(seed)
    # Every length up to 100 covers each remainder of the four-byte reads.
    return [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 100))) for _ in range(count)]


def test_murmur2_is_both_clients_murmur2():
    for key in random_keys(1):
        expected = kafka.partitioner.default.murmur2(key)
        assert murmur2(key) == expected
        assert aiokafka.partitioner.murmur2(key) == expected


def test_murmur2_of_the_java_clients_test_vectors():
    # Values from Kafka's own UtilsTest.testMurmur2, as signed 32-bit ints there.
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for key, signed in vectors.items():
        assert murmur2(key) == signed & 0xFFFFFFFF


def cluster(partitions: list[int], available: list[int]) -> SimpleNamespace:
    return SimpleNamespace(
        topics=lambda: {"t"},
        partitions_for_topic=lambda topic: set(partitions) if topic == "t" else None,
        available_partitions_for_topic=lambda topic: set(available),
    )


@pytest.mark.parametrize("count", [1, 3, 12])
def test_keyed_records_go_where_the_clients_default_partitioners_put_them(count):
    partitions = list(range(count))
    metadata = cluster(partitions, partitions)
    for key in random_keys(count, 1000):
        expected = kafka.partitioner.default.DefaultPartitioner().partition("t", key, key, None, None, metadata)
        assert aiokafka_key_partitioner(key, partitions, partitions) == expected
        assert aiokafka.partitioner.DefaultPartitioner()(key, partitions, partitions) == expected
        assert key_partition(key, count) == expected


def test_records_without_a_key_go_to_an_available_partition():
    assert {aiokafka_key_partitioner(None, [0, 1, 2, 3], [1]) for _ in range(50)} == {1}
    assert {aiokafka_key_partitioner(None, [0, 1], []) for _ in range(200)} == {0, 1}
