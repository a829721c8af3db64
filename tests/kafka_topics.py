"""Kafka topics that exist for one test only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kafka.admin import KafkaAdminClient, NewTopic


@contextmanager
def topics_for_one_test(
    bootstrap: str, *names: str, configs: dict[str, str] | None = None, partitions: int = 1
) -> Iterator[None]:
    """Topics ``names`` of ``partitions`` partitions (with topic ``configs``), deleted afterwards."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {}) for name in names])
    admin.close()
    try:
        yield
    finally:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics(list(names))
        admin.close()
