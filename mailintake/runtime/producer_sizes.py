"""Sizes the project's Kafka producers share (the fetcher's on kafka-python, the classifier's on aiokafka, faust's)."""

from __future__ import annotations

MAX_REQUEST_BYTES = 2 * 1024 * 1024 + 256 * 1024
"""The largest produce request: the topic contracts allow records of 2 MiB
(``max.message.bytes`` in schemas/), and a dead letter carries a whole inline mail (up to
1.5 MiB) with its metadata. kafka-python refuses a record over ``max_request_size`` before
the broker sees it (1 MiB by default), so the limit is the topics' plus room for the
request around it."""

PRODUCER_BATCH_BYTES = 1024 * 1024
"""A producer batch per partition. Every new batch wakes kafka-python's sender thread and
becomes a request of its own; its default of 16 KiB holds two or three mails."""
