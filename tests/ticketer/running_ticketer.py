"""A ticketer process on the real stack, and what the tests feed it and read back.

Each test gets its own consumer group, placed at the end of ``mail.classified`` before
the process starts, so it handles what the test produces (and whatever else arrives
meanwhile, which the ledger keeps harmless) rather than the topic's history.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, OffsetSpec
from kafka.errors import CoordinatorNotAvailableError, NotCoordinatorError
from sqlalchemy import func, select

from mailintake.contracts import get_topic, record_key
from mailintake.contracts.records import DeadLetter, MailClassified, TicketEvent, decode_record, encode_record
from mailintake.database import engine_for
from services.ticketer.tables import ProcessedMail
from tests.topic_reading import read_topic

SOURCE = "mail.classified"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def place_group_at_end(bootstrap: str, group: str, topic: str = SOURCE, timeout: float = 60) -> None:
    """Commit the end offsets of ``topic`` for ``group`` (which has no members yet).

    On a new broker the first group call finds no coordinator while __consumer_offsets
    is still being created; that error is retriable, so it is retried until ``timeout``.
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + timeout
    try:
        partitions = [TopicPartition(topic, p) for p in range(get_topic(topic).partitions)]
        while True:
            try:
                admin.reset_group_offsets(group, {tp: OffsetSpec.LATEST for tp in partitions})
                return
            except (CoordinatorNotAvailableError, NotCoordinatorError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
    finally:
        admin.close()


def delete_group_and_topics(bootstrap: str, group: str) -> None:
    """Remove what a test's ticketer group left on the shared broker: the topics faust
    created for it (``<group>-...``: the table changelog, the assignor's) and the group."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topics = [t for t in admin.list_topics() if t.startswith(f"{group}-")]
        if topics:
            admin.delete_topics(topics)
        try:
            admin.delete_groups([group])
        except Exception:  # noqa: BLE001 - a group that never committed does not exist
            pass
    finally:
        admin.close()


def committed_offsets(bootstrap: str, group: str, topic: str = SOURCE) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
    finally:
        admin.close()


def group_members(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return len(admin.describe_groups([group])[group]["members"])
    finally:
        admin.close()


def end_offsets(bootstrap: str, topic: str = SOURCE) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in range(get_topic(topic).partitions)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


class Producer:
    """Produces records as the classifier does: keyed by contract, acks=all, idempotent."""

    def __init__(self, bootstrap: str) -> None:
        self._producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)

    def send(self, mails: Iterable[MailClassified]) -> list[tuple[int, int]]:
        """Produce ``mails`` in order; return (partition, offset) of each."""
        futures = [self._producer.send(SOURCE, key=record_key(m), value=encode_record(SOURCE, m)) for m in mails]
        self._producer.flush()
        return [(f.get(30).partition, f.get(30).offset) for f in futures]

    def send_raw(self, key: bytes, value: bytes) -> tuple[int, int]:
        metadata = self._producer.send(SOURCE, key=key, value=value).get(30)
        return metadata.partition, metadata.offset

    def close(self) -> None:
        self._producer.close()


class RunningTicketer:
    """``mailintake run ticketer`` as a child process with its own group and HTTP port."""

    def __init__(self, stack, group: str, log_path: Path, **settings: object) -> None:
        self.stack = stack
        self.group = group
        self.log_path = log_path
        self.port = free_port()
        self.env = {
            **os.environ,
            "MAILINTAKE_TICKETER_GROUP_ID": group,
            "MAILINTAKE_TICKETER_HTTP_PORT": str(self.port),
            "MAILINTAKE_TICKETER_SESSION_TIMEOUT_SECONDS": "6",
            **{f"MAILINTAKE_TICKETER_{k.upper()}": str(v) for k, v in settings.items()},
        }
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, wait_ready: bool = True) -> RunningTicketer:
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailintake", "run", "ticketer"], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.starts += 1
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"ticketer not ready after {timeout}s\n{self.log_tail()}")

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as response:
            text = response.read().decode()
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0

    def handled(self, account_id: str) -> dict[str, bool]:
        """Source ids of ``account_id`` this process handled (any of its runs), each with
        whether it was a replay, read from its ``mail.handled`` log lines. Other groups'
        ticketers on the shared topic may write the ledger first; this says what *this* one did."""
        found = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            if '"mail.handled"' not in line or account_id not in line:
                continue
            record = json.loads(line)
            if record.get("account_id") == account_id:
                found[record["source_id"]] = record["replay"]
        return found

    def wait_handled(self, account_id: str, expected: int, timeout: float = 60) -> dict[str, bool]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.handled(account_id)
            if len(found) >= expected or time.monotonic() >= deadline:
                return found
            time.sleep(0.2)

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def log_tail(self, characters: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


def handled_count(database_url: str, account_id: str) -> int:
    with engine_for(database_url).connect() as connection:
        return connection.scalar(
            select(func.count()).select_from(ProcessedMail).where(ProcessedMail.account_id == account_id)
        )


def wait_for_handled(database_url: str, account_id: str, expected: int, timeout: float = 60, ticketer=None) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = handled_count(database_url, account_id)
        if count >= expected or time.monotonic() >= deadline:
            if count < expected and ticketer is not None:
                print(ticketer.log_tail())
            return count
        time.sleep(0.2)


def ticket_events(bootstrap: str, account_id: str, since_ms: int, want: int = 0, timeout: float = 30) -> list[TicketEvent]:
    """The account's events since ``since_ms``, each copy (a replay re-emits with the same id)."""

    def keep(message):
        event = decode_record("ticket.events", message.value)
        return event if event.account_id == account_id else None

    return read_topic(
        bootstrap, "ticket.events", since_ms, keep, until=lambda found: want and len({e.event_id for e in found}) >= want,
        timeout=timeout,
    )


def dead_letters(bootstrap: str, since_ms: int, source: set[tuple[int, int]], timeout: float = 30) -> list[DeadLetter]:
    """Dead letters since ``since_ms`` of the mail.classified records at ``source`` (partition, offset)."""

    def keep(message):
        letter = decode_record("mail.dlq", message.value)
        if letter.source_topic == SOURCE and (letter.source_partition, letter.source_offset) in source:
            return letter
        return None

    return read_topic(bootstrap, "mail.dlq", since_ms, keep, until=lambda found: len(found) >= len(source), timeout=timeout)
