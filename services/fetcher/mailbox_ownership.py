"""Which mailboxes this fetcher replica polls: Kafka's consumer-group protocol decides.

The replicas form one consumer group on the ``accounts`` topic. An account belongs to
the partition its id hashes to, with the partitioner Kafka's producers use for the
same key; a replica polls the accounts of the partitions the group assigns it. No lock
service is involved: when a replica joins, leaves or dies, the group coordinator moves
partitions, and with them mailboxes.

Two polls of one mailbox never overlap across a rebalance: the group protocol here is
eager (every member gives up all its partitions before any member gets new ones), and
this replica's revocation callback returns only after its polls of the revoked
mailboxes have stopped (:class:`MailboxOwnership` calls ``release``, which waits for
them; a poll stops at the next chunk boundary once its mailbox is no longer owned). A
replica that dies is dropped from the group after the session timeout, and its
mailboxes are polled by the survivors within that timeout plus one interval.

Records on the topic are change notices (``mailintake accounts import`` writes them):
the partition's owner reads its accounts from PostgreSQL at once instead of at the
next refresh. PostgreSQL stays the only source of the accounts themselves.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from collections.abc import Callable, Iterable

import structlog
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from prometheus_client import Gauge

from mailintake.contracts import get_topic, record_key
from mailintake.contracts.records import AccountNotice, encode_record
from mailintake.runtime.key_partitioning import key_partition

TOPIC = "accounts"

OWNED_PARTITIONS = Gauge("mailintake_fetcher_owned_partitions", "Partitions of the accounts topic this replica owns")

log = structlog.get_logger(__name__)


class OwnershipUnavailable(RuntimeError):
    """The fetchers' consumer group cannot assign mailboxes (the accounts topic is missing or wrong)."""


def account_partition(account_id: str, partitions: int) -> int:
    """The partition of ``account_id``: what Kafka's default partitioner picks for the key."""
    return key_partition(account_id.encode("utf-8"), partitions)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, ownership: MailboxOwnership) -> None:
        self._ownership = ownership

    def on_partitions_revoked(self, revoked):
        self._ownership._revoke({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned):
        self._ownership._assign({tp.partition for tp in assigned})


class MailboxOwnership:
    """This replica's membership in the fetchers' consumer group, on a thread of its own.

    ``changed`` is set whenever the owned partitions change or a change notice for an
    owned account arrives; the fetcher's loop clears it and reads its accounts again.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        *,
        session_timeout_seconds: float,
        release_timeout_seconds: float,
    ) -> None:
        self.partitions = get_topic(TOPIC).partitions
        self.changed = threading.Event()
        self._owned: frozenset[int] = frozenset()
        self._lock = threading.Lock()
        self._release: Callable[[Callable[[str], bool]], None] = lambda _revoked: None
        self._stop = threading.Event()
        session_ms = int(session_timeout_seconds * 1000)
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            group_id=group_id,
            client_id="fetcher-ownership",
            enable_auto_commit=False,
            # Notices older than this replica's start are covered by its first read of PostgreSQL.
            auto_offset_reset="latest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(1000, session_ms // 3),
            # The group waits this long for a member's revocation (its polls stopping)
            # before dropping it; a poll stops within one chunk, bounded by the timeouts.
            max_poll_interval_ms=int(release_timeout_seconds * 1000) + session_ms,
            # Eager, not cooperative: all partitions are given up before any moves.
            partition_assignment_strategy=(RoundRobinPartitionAssignor,),
        )
        self._thread = threading.Thread(target=self._run, name="mailbox-ownership", daemon=True)

    def start(self, release: Callable[[Callable[[str], bool]], None]) -> None:
        """Join the group. ``release(is_revoked)`` must return once no poll of an account
        for which ``is_revoked(account_id)`` holds is running (it is called on this
        object's thread, during a rebalance)."""
        self._release = release
        self._check_topic()
        self._consumer.subscribe([TOPIC], listener=_Listener(self))
        self._thread.start()

    def _check_topic(self, timeout_seconds: float = 30) -> None:
        """Refuse to run on a missing topic (no partitions: no mailbox would ever be
        polled) or on one whose partition count differs from the contract (the accounts
        of the partitions it lacks would never be polled)."""
        deadline = time.monotonic() + timeout_seconds
        found = self._consumer.partitions_for_topic(TOPIC)
        while not found and time.monotonic() < deadline:
            time.sleep(0.5)
            found = self._consumer.partitions_for_topic(TOPIC)
        if not found:
            raise OwnershipUnavailable(
                f"the Kafka topic {TOPIC!r} does not exist, so no fetcher replica would own any mailbox: "
                "run `mailintake topics apply`"
            )
        if len(found) != self.partitions:
            raise OwnershipUnavailable(
                f"the Kafka topic {TOPIC!r} has {len(found)} partitions, but schemas/accounts.yaml says "
                f"{self.partitions}: accounts are placed by the contract's count, so fix the topic to match it"
            )

    def owns(self, account_id: str) -> bool:
        return account_partition(account_id, self.partitions) in self._owned

    def owned(self, account_ids: Iterable[str]) -> list[str]:
        owned = self._owned
        return [a for a in account_ids if account_partition(a, self.partitions) in owned]

    def close(self) -> None:
        """Leave the group (its partitions move to the other replicas at once)."""
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    batches = self._consumer.poll(timeout_ms=500)
                except Exception as exc:  # noqa: BLE001 - a broker outage must not end ownership; the client reconnects
                    log.warning("ownership.poll_failed", error=f"{type(exc).__name__}: {exc}")
                    self._stop.wait(1.0)
                    continue
                if any(batches.values()):
                    self.changed.set()
        finally:
            # Leaving runs the revocation callback: polls of our mailboxes stop first.
            self._consumer.close()

    def _revoke(self, partitions: set[int]) -> None:
        with self._lock:
            self._owned = self._owned - partitions
        OWNED_PARTITIONS.set(len(self._owned))
        self.changed.set()
        revoked = frozenset(partitions)
        self._release(lambda account_id: account_partition(account_id, self.partitions) in revoked)
        log.info("ownership.revoked", partitions=sorted(partitions))

    def _assign(self, partitions: set[int]) -> None:
        with self._lock:
            self._owned = self._owned | partitions
        OWNED_PARTITIONS.set(len(self._owned))
        self.changed.set()
        log.info("ownership.assigned", partitions=sorted(partitions))


def announce_account_changes(bootstrap_servers: str, changes: Iterable[AccountNotice], timeout_seconds: float = 30) -> None:
    """Write change notices for ``changes``, so each account's owner reads it again at once."""
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), acks="all", client_id="accounts-cli")
    try:
        futures = [producer.send(TOPIC, key=record_key(c), value=encode_record(TOPIC, c)) for c in changes]
        producer.flush(timeout=timeout_seconds)
        for future in futures:
            future.get(timeout=timeout_seconds)
    finally:
        producer.close(timeout=timeout_seconds)


class AccountNoticeWriter:
    """Writes one notice per account change, from a service that changes accounts (the
    admin API). A failure is logged, never raised: the change is stored, and the
    fetchers read it at their next refresh anyway."""

    def __init__(self, bootstrap_servers: str, timeout_seconds: float = 10) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._timeout = timeout_seconds
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def __call__(self, account_id: str, deleted: bool) -> None:
        notice = AccountNotice(account_id=account_id, deleted=deleted, changed_at=datetime.now(UTC))
        try:
            with self._lock:
                if self._producer is None:
                    self._producer = KafkaProducer(
                        bootstrap_servers=self._bootstrap_servers.split(","), acks="all", client_id="admin",
                        max_block_ms=int(self._timeout * 1000),
                    )
                producer = self._producer
            producer.send(TOPIC, key=record_key(notice), value=encode_record(TOPIC, notice)).get(self._timeout)
        except Exception as exc:  # noqa: BLE001 - the change is stored; only the shortcut failed
            log.warning("accounts.notice_failed", account_id=account_id, error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self._timeout)
                self._producer = None
