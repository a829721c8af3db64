"""The fetcher's loop: poll each due account, produce its new mails, act only after the ack.

Per chunk of mails the order is fixed, and it is the no-loss argument:

1. fetch the bytes (BODY.PEEK: nothing changes on the server);
2. store oversized mails in the claim-check store;
3. produce to ``mail.raw`` (acks=all, idempotent producer) and wait for every ack;
4. apply the after-fetch action (flag, move, delete) to exactly the acknowledged mails;
5. advance the durable high-water mark.

A crash before 3 completes loses nothing (nothing was acted on); a crash between 3 and 5
re-produces mails, which downstream deduplicates by account and source id.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from datetime import UTC, datetime

import structlog
from kafka import KafkaProducer
from prometheus_client import Counter, Gauge, Histogram

from mailintake.claim_check import ClaimCheckStore
from mailintake.contracts.records import encode_record
from mailintake.database import engine_for
from mailintake.runtime.http_endpoint import Health
from services.fetcher.account import Account, AccountProtocol, load_accounts
from services.fetcher.core import Cursor, mail_record, plan_fetch
from services.fetcher.cursor_store import CursorStore
from services.fetcher.imap_mailbox import ImapMailbox, MailServerError
from services.fetcher.settings import FetcherSettings

TOPIC = "mail.raw"
MAX_BACKOFF_SECONDS = 900.0

log = structlog.get_logger(__name__)

MAILS = Counter("mailintake_fetcher_mails_total", "Mails produced to mail.raw", ["account_id"])
BYTES = Counter("mailintake_fetcher_bytes_total", "Bytes of mails produced", ["account_id"])
POLL_LAG = Histogram(
    "mailintake_fetcher_poll_lag_seconds", "How late a poll started against its schedule", buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300)
)
LAST_SUCCESS = Gauge("mailintake_fetcher_last_success_timestamp_seconds", "End of the last good poll", ["account_id"])
LAST_ERROR = Gauge("mailintake_fetcher_last_error_timestamp_seconds", "Time of the last failed poll", ["account_id"])
ERRORS = Counter("mailintake_fetcher_errors_total", "Failed polls", ["account_id", "step"])


def backoff_seconds(interval: int, failures: int, rng: random.Random) -> float:
    """Exponential backoff with jitter, never shorter than the interval."""
    base = min(interval * (2 ** max(failures - 1, 0)), MAX_BACKOFF_SECONDS)
    return max(interval, base * rng.uniform(0.8, 1.2))


class Fetcher:
    def __init__(self, settings: FetcherSettings, accounts: list[Account]) -> None:
        self._settings = settings
        self._accounts = {a.id: a for a in accounts if a.enabled}
        engine = engine_for(settings.database_url.get_secret_value())
        self._cursors = CursorStore(engine)
        self._claim_checks = ClaimCheckStore(engine)
        self._producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
            client_id="fetcher",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            # Room for a mail at the inline limit plus its envelope.
            max_request_size=settings.inline_limit_bytes + 256 * 1024,
        )

    def poll(self, account: Account) -> int:
        """Fetch and produce every new mail of ``account``; return how many."""
        if account.protocol is not AccountProtocol.IMAP:
            raise MailServerError("protocol", f"{account.protocol.value} fetching is not available in this version")
        cursor = self._cursors.load(account.id, account.folder)
        cycle = cursor.poll_cycle + 1
        structlog.contextvars.bind_contextvars(account_id=account.id, poll_cycle=cycle)
        mailbox = ImapMailbox(account, self._settings.timeout_seconds)
        produced = 0
        try:
            uidvalidity = mailbox.select()
            changed = cursor.uidvalidity is not None and cursor.uidvalidity != uidvalidity
            plan = plan_fetch(cursor, uidvalidity, mailbox.uids_after(0 if changed else cursor.last_uid))
            if plan.uidvalidity_changed:
                log.warning("imap.uidvalidity_changed", old=cursor.uidvalidity, new=uidvalidity, mails=len(plan.uids))
            last_uid = 0 if plan.uidvalidity_changed else cursor.last_uid
            chunk_size = self._settings.fetch_chunk
            for start in range(0, len(plan.uids), chunk_size):
                chunk = list(plan.uids[start : start + chunk_size])
                acknowledged = self._produce(account, uidvalidity, cycle, mailbox.fetch(chunk))
                if acknowledged:
                    mailbox.after_fetch(acknowledged)
                last_uid = max(chunk)
                self._cursors.save(account.id, account.folder, Cursor(uidvalidity, last_uid, cycle))
                produced += len(acknowledged)
            if not plan.uids:
                self._cursors.save(account.id, account.folder, Cursor(uidvalidity, last_uid, cycle))
        finally:
            mailbox.close()
            structlog.contextvars.unbind_contextvars("account_id", "poll_cycle")
        return produced

    def _produce(self, account: Account, uidvalidity: int, cycle: int, mails: dict[int, bytes]) -> list[int]:
        """Produce ``mails`` and return the UIDs Kafka acknowledged (all of them, or raise)."""
        now = datetime.now(UTC)
        sends = []
        for uid, raw in sorted(mails.items()):
            claim = self._claim_checks.put(raw) if len(raw) > self._settings.inline_limit_bytes else None
            record = mail_record(
                account, source_id=f"imap:{uidvalidity}:{uid}", raw=raw, poll_cycle=cycle, fetched_at=now, claim_check=claim
            )
            future = self._producer.send(TOPIC, key=account.id.encode(), value=encode_record(TOPIC, record))
            sends.append((uid, len(raw), record.message_id, future))
        self._producer.flush()
        for uid, size, message_id, future in sends:
            future.get(timeout=self._settings.timeout_seconds)
            MAILS.labels(account.id).inc()
            BYTES.labels(account.id).inc(size)
            log.info("mail.produced", uid=uid, message_id=message_id, size=size)
        return [uid for uid, *_ in sends]

    def run(self, health: Health, stop: threading.Event) -> None:
        """Poll every enabled account at its interval until ``stop`` is set."""
        rng = random.Random()
        failures: dict[str, int] = {}
        now = time.monotonic()
        schedule = [(now, account_id) for account_id in sorted(self._accounts)]
        heapq.heapify(schedule)
        health.set_ready(True)
        log.info("fetcher.started", accounts=len(self._accounts))
        while not stop.is_set():
            health.beat()
            if not schedule:
                stop.wait(1.0)
                continue
            due, account_id = schedule[0]
            wait = due - time.monotonic()
            if wait > 0:
                stop.wait(min(wait, 1.0))
                continue
            heapq.heappop(schedule)
            account = self._accounts[account_id]
            POLL_LAG.observe(max(0.0, -wait))
            started = time.monotonic()
            try:
                count = self.poll(account)
            except Exception as exc:  # noqa: BLE001 - one failing account must not stop the others
                failures[account_id] = failures.get(account_id, 0) + 1
                delay = backoff_seconds(account.poll_interval_seconds, failures[account_id], rng)
                step = getattr(exc, "step", type(exc).__name__)
                ERRORS.labels(account_id, step).inc()
                LAST_ERROR.labels(account_id).set_to_current_time()
                log.error(
                    "poll.failed",
                    account_id=account_id,
                    step=step,
                    server_reply=getattr(exc, "server_reply", str(exc)),
                    retry_in_seconds=round(delay, 1),
                )
                heapq.heappush(schedule, (started + delay, account_id))
                continue
            failures.pop(account_id, None)
            LAST_SUCCESS.labels(account_id).set_to_current_time()
            if count:
                log.info("poll.done", account_id=account_id, mails=count, seconds=round(time.monotonic() - started, 3))
            # Next poll is due one interval after this one was due, so polls don't drift.
            heapq.heappush(schedule, (max(due + account.poll_interval_seconds, time.monotonic()), account_id))
        self._producer.close(timeout=10)


def run(settings: FetcherSettings, health: Health, stop: threading.Event) -> None:
    Fetcher(settings, load_accounts(settings.accounts_file)).run(health, stop)
