"""Sizes the project's Kafka producers share (the fetcher's and the classifier's on aiokafka, faust's, the dead-letter tools')."""

from __future__ import annotations

MAX_REQUEST_BYTES = 2 * 1024 * 1024 + 256 * 1024
"""The largest produce request: the topic contracts allow records of 2 MiB
(``max.message.bytes`` in schemas/), and a dead letter carries a whole inline mail (up to
1.5 MiB) with its metadata. The clients refuse a record over ``max_request_size`` before
the broker sees it (1 MiB by default), so the limit is the topics' plus room for the
request around it."""

PRODUCER_BATCH_BYTES = 1024 * 1024
"""A producer batch per partition. Every batch becomes a request of its own (and in
kafka-python wakes its sender thread); the clients' default of 16 KiB holds two or three
mails."""
