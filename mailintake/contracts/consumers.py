"""The reader each consuming service uses, by the name the topic yaml files give it.

A consumer that appears in a topic's yaml must have a reader here for that
topic; ``tests/contracts`` feeds every example to every consumer of its topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from mailintake.contracts.records import TopicRecord, decode_record


@dataclass(frozen=True)
class ConsumerReader:
    """Decodes the values of ``topic`` into typed records for ``consumer``."""

    consumer: str
    topic: str

    def __call__(self, data: bytes) -> TopicRecord:
        return decode_record(self.topic, data)


CONSUMER_READERS: Mapping[str, ConsumerReader] = MappingProxyType(
    {
        reader.consumer: reader
        for reader in (
            ConsumerReader("classifier", "mail.raw"),
            ConsumerReader("ticketer", "mail.classified"),
            ConsumerReader("ticket-events-reader", "ticket.events"),
            ConsumerReader("dlq-cli", "mail.dlq"),
            ConsumerReader("dlq-cli-ledger", "mail.dlq.replays"),
            ConsumerReader("fetcher", "accounts"),
        )
    }
)
"""consumer name -> reader of the one topic that consumer subscribes to."""


def reader_for(consumer: str) -> ConsumerReader:
    try:
        return CONSUMER_READERS[consumer]
    except KeyError:
        raise KeyError(f"no reader for consumer {consumer!r}; known: {', '.join(CONSUMER_READERS)}") from None
