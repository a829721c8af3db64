"""The fetcher's producer on the stack's Kafka: chunks from poll threads, acknowledged whole,
in order on the key's partition, and a Kafka that is away when the fetcher starts."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import structlog
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from mailintake.contracts.records import record_encoder
from mailintake.runtime.key_partitioning import key_partition
from services.fetcher import mail_raw_producer
from services.fetcher.account import Account
from services.fetcher.core import mail_record
from services.fetcher.mail_raw_producer import MailRawProducer
from tests.peers.slow_link import SlowLink

TOPIC = "mail.raw"


def chunk(account_id: str, first: int, count: int) -> list[bytes]:
    """``count`` encoded mail.raw records of ``account_id``, source ids ``first`` onwards."""
    account = Account(id=account_id, name="Producer test", host="h", port=993, username="u", password=SecretStr("p"))
    encode = record_encoder(TOPIC)
    now = datetime.now(UTC)
    return [
        encode(mail_record(account, source_id=f"t:{n}", raw=f"Subject: {n}\r\n\r\nbody {n}\r\n".encode(),
                           poll_cycle=1, fetched_at=now, claim_check=None))
        for n in range(first, first + count)
    ]


def test_chunks_sent_from_many_threads_land_whole_and_in_order_on_their_keys_partitions(stack, unique, mail_raw):
    producer = MailRawProducer(stack.kafka_bootstrap, max_request_bytes=2 * 1024 * 1024)
    accounts = [f"producer-{unique}-{i}" for i in range(6)]

    def poll(account_id: str) -> list[int]:
        # As a poll does: the next chunk of a mailbox only once the previous one was acknowledged.
        return [producer.send(TOPIC, account_id.encode(), chunk(account_id, first, 50)).result(30) for first in (0, 50, 100)]

    try:
        with ThreadPoolExecutor(max_workers=6) as polls:
            batches = list(polls.map(poll, accounts))
    finally:
        producer.close(timeout=10)

    assert all(count >= 1 for per_account in batches for count in per_account)
    for account_id in accounts:
        records = mail_raw.records(account_id)
        assert [r.source_id for r in records] == [f"t:{n}" for n in range(150)]
    partitions = mail_raw.partitions_of(accounts[0])
    assert partitions == {key_partition(accounts[0].encode(), 12)}


def test_a_kafka_away_at_the_first_send_fails_that_send_and_the_next_one_connects(stack, unique, mail_raw):
    host, port = stack.kafka_bootstrap.split(":")
    with socket.create_server(("127.0.0.1", 0)) as probe:
        away = probe.getsockname()[1]  # nothing listens here once the probe is closed
    producer = MailRawProducer(f"127.0.0.1:{away}", max_request_bytes=2 * 1024 * 1024)
    account_id = f"producer-away-{unique}"
    link = None
    try:
        with pytest.raises(KafkaConnectionError, match=f"no Kafka broker answered at 127.0.0.1:{away}$"):
            producer.send(TOPIC, account_id.encode(), chunk(account_id, 0, 3)).result(30)

        # The broker's own address comes back in the metadata; only the bootstrap goes through the link.
        link = SlowLink((host, int(port)), None, port=away)
        assert producer.send(TOPIC, account_id.encode(), chunk(account_id, 3, 3)).result(30) == 1
    finally:
        producer.close(timeout=10)
        if link is not None:
            link.close()

    assert [r.source_id for r in mail_raw.records(account_id)] == ["t:3", "t:4", "t:5"]


class RecordsItsStartContext:
    """Stands in for the aiokafka producer: notes the log context a task started by ``start`` runs in, then fails."""

    seen: list[dict] = []

    async def start(self) -> None:
        async def background() -> None:
            self.seen.append(structlog.contextvars.get_contextvars())

        await asyncio.create_task(background())
        raise KafkaConnectionError("stand-in: no broker")

    async def stop(self) -> None:
        pass


def test_the_producers_background_tasks_do_not_log_as_the_poll_that_sent_first(monkeypatch):
    monkeypatch.setattr(mail_raw_producer, "batch_producer", lambda *config: RecordsItsStartContext())
    RecordsItsStartContext.seen = []
    producer = MailRawProducer("127.0.0.1:9", max_request_bytes=1024 * 1024)
    structlog.contextvars.bind_contextvars(account_id="first-poll", poll_cycle=7)
    try:
        with pytest.raises(KafkaConnectionError):
            producer.send(TOPIC, b"first-poll", [b"x"]).result(10)
    finally:
        structlog.contextvars.unbind_contextvars("account_id", "poll_cycle")
        producer.close(timeout=10)

    assert RecordsItsStartContext.seen == [{}]
