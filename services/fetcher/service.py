"""The fetcher's loop: poll each due account, produce its new mails, act only after the ack.

Per chunk of mails the order is fixed, and it is the no-loss argument:

1. fetch the bytes (IMAP BODY.PEEK, POP3 RETR, EWS GetItem, Graph ``$value``: nothing
   changes on the server);
2. store oversized mails in the claim-check store;
3. produce to ``mail.raw`` (acks=all, idempotent producer; ``mail_raw_producer.py``) and
   wait for every ack;
4. apply the after-fetch action (flag, move, delete) to exactly the acknowledged mails;
5. advance the durable mark (IMAP UIDVALIDITY + UID, POP3 UIDLs, EWS item ids, Graph
   message ids and, after a delta round's last chunk, its deltaLink).

A crash before 3 completes loses nothing (nothing was acted on); a crash between 3 and 5
re-produces mails, which downstream deduplicates by account and source id. When a poll
has several chunks, the mailbox steps (1, 4, 5) of one chunk run in a second thread
beside steps 2 and 3 of the next; each chunk still goes through 1 to 5 in order.

The loop is protocol-agnostic: each protocol is a
:class:`~services.fetcher.mail_source.MailSource`. Polls of different accounts run
in parallel worker threads, so a slow or failing account does not hold up the others;
every mail-server operation is bounded by the socket timeout, every Kafka wait too.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter, Gauge

from mailintake.claim_check import ClaimCheckStore
from mailintake.contracts.records import record_encoder
from mailintake.database import engine_for
from mailintake.runtime.http_endpoint import Health
from services.fetcher.account import OAUTH2_METHODS, Account, AccountProtocol
from services.fetcher.account_store import AccountStore
from services.fetcher.core import chunked, chunks_by_size, mail_record
from services.fetcher.cursor_store import CursorStore
from services.fetcher.graph_mailbox import AccountTokens, BearerTokens, GraphMailbox
from services.fetcher.imap_mailbox import ImapMailbox
from services.fetcher.mail_raw_producer import MailRawProducer
from services.fetcher.mail_source import MailServerError, MailSource, StepFailed
from services.fetcher.mailbox_ownership import MailboxOwnership
from services.fetcher.oauth_tokens import RotatedRefreshToken, TokenBroker, TokenRefused
from services.fetcher.poll_schedule import PollSchedule
from services.fetcher.pop3_mailbox import Pop3Mailbox
from services.fetcher.settings import FetcherSettings, MailboxOwnershipMode
from services.fetcher.status_store import AccountStatusStore
from services.fetcher.uidl_store import UidlStore

__all__ = ["Fetcher", "MailServerError", "StepFailed", "run"]

TOPIC = "mail.raw"

# How long the owned partitions must hold still before the schedule follows them.
OWNERSHIP_SETTLE_SECONDS = 1.0

log = structlog.get_logger(__name__)

MAILS = Counter("mailintake_fetcher_mails_total", "Mails produced to mail.raw", ["account_id"])
BYTES = Counter("mailintake_fetcher_bytes_total", "Bytes of mails produced", ["account_id"])
POLL_LAG = Gauge("mailintake_fetcher_poll_lag_seconds", "How late the last poll started against its schedule", ["account_id"])
LAST_SUCCESS = Gauge("mailintake_fetcher_last_success_timestamp_seconds", "End of the last good poll", ["account_id"])
LAST_ERROR = Gauge("mailintake_fetcher_last_error_timestamp_seconds", "Time of the last failed poll", ["account_id"])
FAILURES = Gauge("mailintake_fetcher_consecutive_failures", "Failed polls since the last good one", ["account_id"])
ERRORS = Counter("mailintake_fetcher_errors_total", "Failed polls", ["account_id", "step"])
TOKEN_REFUSALS = Counter(
    "mailintake_fetcher_token_refusals_total",
    "OAuth2 access tokens the identity provider refused, by its error code (AADSTS code or OAuth2 error); "
    "the full text is in the account status",
    ["account_id", "error"],
)


@contextmanager
def _step(name: str) -> Iterator[None]:
    """Name the step of anything that fails inside without naming its own."""
    try:
        yield
    except StepFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the step named
        raise StepFailed(name, None, f"{type(exc).__name__}: {exc}") from exc


@dataclass
class _Progress:
    mails: int = 0


@dataclass
class _Sent:
    """A chunk handed to the producer, not yet known to be acknowledged."""

    chunk: list[str]
    mails: list[tuple[str, int, str | None]] = field(default_factory=list)
    """(source id, size, Message-ID) per fetched mail."""
    acknowledged: Future[int] | None = None
    """Done when Kafka acknowledged all of ``mails``; None when there were none."""


class Fetcher:
    """Polls accounts into ``mail.raw``.

    ``producer`` replaces the Kafka producer (tests inject one whose acks fail);
    ``source_address`` binds the local end of every mail-server connection.
    """

    def __init__(
        self,
        settings: FetcherSettings,
        accounts: list[Account],
        *,
        producer: MailRawProducer | None = None,
        source_address: str | None = None,
        refresh_accounts: Callable[[], list[Account]] | None = None,
        ownership: MailboxOwnership | None = None,
        bearer_tokens: Callable[[Account], BearerTokens] | None = None,
        tokens: TokenBroker | None = None,
        on_rotated_refresh_token: RotatedRefreshToken | None = None,
    ) -> None:
        """``on_rotated_refresh_token`` stores a refresh token the identity provider rotated
        (the stored accounts' encrypted copy), used only when ``tokens`` is not given;
        ``bearer_tokens`` replaces ``tokens`` for Graph accounts (tests hand in tokens a stub issued)."""
        self._settings = settings
        self._tokens = tokens or TokenBroker(
            timeout=settings.timeout_seconds,
            refresh_margin_seconds=settings.token_refresh_margin_seconds,
            on_rotated_refresh_token=on_rotated_refresh_token,
        )
        self._bearer_tokens = bearer_tokens or (lambda account: AccountTokens(self._tokens, account))
        self._ownership = ownership
        self._enabled = {a.id: a for a in accounts if a.enabled}
        self._accounts = self._owned(self._enabled)
        self._refresh_accounts = refresh_accounts
        # Accounts being polled right now; a revocation waits until none of its are.
        self._polling: set[str] = set()
        self._polling_changed = threading.Condition()
        self._source_address = source_address
        self._engine = engine = engine_for(settings.database_url.get_secret_value())
        self._cursors = CursorStore(engine)
        self._uidls = UidlStore(engine)
        self._status = AccountStatusStore(engine)
        self._claim_checks = ClaimCheckStore(engine)
        self._owns_producer = producer is None
        self._producer = producer or MailRawProducer(
            settings.kafka_bootstrap_servers,
            # Room for a mail at the inline limit plus its envelope.
            max_request_bytes=settings.inline_limit_bytes + 256 * 1024,
        )

    # --- one poll -------------------------------------------------------------------

    def poll(self, account: Account, *, lag_seconds: float | None = None) -> int:
        """Fetch and produce every new mail of ``account``; return how many.

        The outcome goes to ``account_status`` and the metrics either way; a failure is
        re-raised as :class:`StepFailed` naming the step and carrying the server's reply.
        """
        structlog.contextvars.bind_contextvars(account_id=account.id)
        if lag_seconds is not None:
            POLL_LAG.labels(account.id).set(lag_seconds)
        progress = _Progress()
        try:
            with _step("poll"):
                self._poll(account, progress)
        except StepFailed as failure:
            now = datetime.now(UTC)
            failures = self._status.record_failure(
                account.id, at=now, lag_seconds=lag_seconds, step=failure.step, error=failure.message, mails=progress.mails
            )
            ERRORS.labels(account.id, failure.step).inc()
            if isinstance(failure, TokenRefused):
                TOKEN_REFUSALS.labels(account.id, failure.error_code).inc()
            elif failure.step == "authentication" and account.authentication in OAUTH2_METHODS:
                # The server refused the token (revoked, say): ask the provider afresh next time.
                self._tokens.forget(account.id)
            LAST_ERROR.labels(account.id).set(now.timestamp())
            FAILURES.labels(account.id).set(failures)
            raise
        finally:
            structlog.contextvars.unbind_contextvars("account_id", "poll_cycle")
        now = datetime.now(UTC)
        self._status.record_success(account.id, at=now, lag_seconds=lag_seconds, mails=progress.mails)
        LAST_SUCCESS.labels(account.id).set(now.timestamp())
        FAILURES.labels(account.id).set(0)
        return progress.mails

    def _poll(self, account: Account, progress: _Progress) -> None:
        source = self._open(account)
        try:
            pending = source.pending()
            # Counted once the mailbox was actually looked at, so failed connections do
            # not stretch the cycle numbers that bundling compares.
            cycle = self._cursors.next_cycle(account.id, account.folder)
            structlog.contextvars.bind_contextvars(poll_cycle=cycle)
            settings, sizes = self._settings, source.sizes()
            chunks = list(
                chunks_by_size(pending, sizes, settings.fetch_chunk_bytes) if sizes else chunked(pending, settings.fetch_chunk)
            )
            if len(chunks) > 1:
                self._overlapped(account, source, cycle, chunks, progress)
            elif chunks:
                # One chunk (the usual poll: a few new mails) has nothing to overlap.
                sent = self._send(account, cycle, chunks[0], source.fetch(chunks[0]))
                self._act_and_advance(source, sent, self._acknowledged(account, sent, progress))
        finally:
            source.close()

    def _overlapped(
        self, account: Account, source: MailSource, cycle: int, chunks: list[list[str]], progress: _Progress
    ) -> None:
        """Produce many chunks with the mailbox work of one beside the Kafka work of the next.

        A second thread acts on chunk n-1, marks it and fetches chunk n+1, mostly waiting
        for the mail server, while this one encodes and produces chunk n. The order per
        chunk stays: produce, every ack, action, mark. The mailbox is used by one thread
        at a time (each step waits for the previous one's result), and at most three
        chunks are held: one fetched, one produced, one being fetched.
        """
        handed_over = False
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailbox") as mailbox:
            mails = source.fetch(chunks[0])
            job = mailbox.submit(contextvars.copy_context().run, source.fetch, chunks[1])
            produced = self._send(account, cycle, chunks[0], mails)
            for chunk, following in zip(chunks[1:], [*chunks[2:], None], strict=True):
                mails = job.result()
                acknowledged = self._acknowledged(account, produced, progress)
                if not self._may_poll(account.id):
                    # Another replica owns the mailbox now (a rebalance waits for this
                    # poll): what was produced is acted on and marked below; the chunk
                    # fetched but not produced is the new owner's.
                    handed_over = True
                    break
                job = mailbox.submit(
                    contextvars.copy_context().run, self._act_then_fetch, source, produced, acknowledged, following
                )
                produced = self._send(account, cycle, chunk, mails)
            else:
                job.result()
                acknowledged = self._acknowledged(account, produced, progress)
        self._act_and_advance(source, produced, acknowledged)
        if handed_over:
            log.info("poll.handed_over", mails=progress.mails)

    def _act_then_fetch(
        self, source: MailSource, produced: _Sent, acknowledged: list[str], following: list[str] | None
    ) -> Mapping[str, bytes]:
        self._act_and_advance(source, produced, acknowledged)
        return source.fetch(following) if following else {}

    def _open(self, account: Account) -> MailSource:
        """An open, authenticated source for the account's protocol."""
        timeout = self._settings.timeout_seconds
        if account.protocol is AccountProtocol.IMAP:
            imap = ImapMailbox(account, self._cursors, timeout, **self._session_options(account))
            imap.open()
            return imap
        if account.protocol is AccountProtocol.POP3:
            pop3 = Pop3Mailbox(account, self._uidls, timeout, **self._session_options(account))
            pop3.open()
            return pop3
        if account.protocol is AccountProtocol.EWS:
            # Imported here: exchangelib and GSSAPI are needed only where EWS accounts are polled.
            from services.fetcher.ews_item_store import EwsItemStore
            from services.fetcher.ews_mailbox import EwsMailbox

            return EwsMailbox(account, EwsItemStore(self._engine), timeout).open()
        if account.protocol is AccountProtocol.GRAPH:
            from services.fetcher.graph_delta_store import GraphDeltaStore

            tokens = self._bearer_tokens(account)
            graph = GraphMailbox(
                account, tokens, GraphDeltaStore(self._engine), timeout, source_address=self._source_address,
                concurrency=self._settings.graph_requests_per_mailbox,
            )
            return graph.open()
        raise StepFailed("protocol", None, f"{account.protocol.value} fetching is not available in this version")

    def _session_options(self, account: Account) -> dict[str, Any]:
        options: dict[str, Any] = {"source_address": self._source_address}
        if account.authentication in OAUTH2_METHODS:
            options["access_token"] = lambda: self._tokens.access_token(account)
        return options

    def _send(self, account: Account, cycle: int, chunk: list[str], mails: Mapping[str, bytes]) -> _Sent:
        """Hand ``mails`` to the producer; :meth:`_acknowledged` waits for their acks."""
        now = datetime.now(UTC)
        sent = _Sent(chunk)
        key = account.id.encode()
        with _step("produce"):
            encode = record_encoder(TOPIC)
            values = []
            for source_id, raw in mails.items():
                claim = self._claim_checks.put(raw) if len(raw) > self._settings.inline_limit_bytes else None
                record = mail_record(account, source_id=source_id, raw=raw, poll_cycle=cycle, fetched_at=now, claim_check=claim)
                values.append(encode(record))
                sent.mails.append((source_id, len(raw), record.message_id))
            if values:
                sent.acknowledged = self._producer.send(TOPIC, key, values)
        return sent

    def _acknowledged(self, account: Account, sent: _Sent, progress: _Progress) -> list[str]:
        """The source ids of ``sent`` once Kafka acknowledged them all (or raise), within the timeout."""
        if sent.acknowledged is not None:
            with _step("produce"):
                try:
                    sent.acknowledged.result(timeout=self._settings.timeout_seconds)
                except TimeoutError:
                    # Records still in the producer may reach Kafka later; the mails stay
                    # unmarked, so the next poll produces them again and the ticketer's ledger
                    # knows the repeats.
                    sent.acknowledged.cancel()
                    raise TimeoutError(
                        f"Kafka did not acknowledge {len(sent.mails)} mails within {self._settings.timeout_seconds:g} s"
                    ) from None
            for source_id, size, message_id in sent.mails:
                log.debug("mail.produced", source_id=source_id, message_id=message_id, size=size)
        size = sum(size for _, size, _ in sent.mails)
        progress.mails += len(sent.mails)
        MAILS.labels(account.id).inc(len(sent.mails))
        BYTES.labels(account.id).inc(size)
        if sent.mails:
            # One line per chunk: a line per mail cost a fifth of the poll thread's time.
            log.info("mails.produced", mails=len(sent.mails), bytes=size, first=sent.mails[0][0], last=sent.mails[-1][0])
        return [source_id for source_id, *_ in sent.mails]

    @staticmethod
    def _act_and_advance(source: MailSource, sent: _Sent, acknowledged: list[str]) -> None:
        """The after-fetch action on the acknowledged mails, then the durable mark past the chunk."""
        source.after_fetch(acknowledged)
        with _step("advance"):
            source.advance(sent.chunk)

    # --- the loop ---------------------------------------------------------------------

    def _may_poll(self, account_id: str) -> bool:
        return self._ownership is None or self._ownership.owns(account_id)

    def _poll_in_worker(self, account: Account, due: float) -> StepFailed | None:
        """One poll in a worker thread; the failure is returned, never raised."""
        lag = max(0.0, time.monotonic() - due)
        started = time.monotonic()
        # Registered before ownership is checked: a revocation that comes later waits
        # for this poll, one that came earlier makes the check fail.
        with self._polling_changed:
            self._polling.add(account.id)
        try:
            if not self._may_poll(account.id):
                return None
            count = self.poll(account, lag_seconds=lag)
        except StepFailed as failure:
            return failure
        except Exception as exc:  # noqa: BLE001 - e.g. account_status unwritable; the loop must go on
            return StepFailed("status", None, f"{type(exc).__name__}: {exc}")
        finally:
            with self._polling_changed:
                self._polling.discard(account.id)
                self._polling_changed.notify_all()
        if count:
            log.info("poll.done", account_id=account.id, mails=count, seconds=round(time.monotonic() - started, 3))
        return None

    def run(self, health: Health, stop: threading.Event) -> None:
        """Poll every enabled account at its interval until ``stop`` is set."""
        # Failing accounts go on with their backoff from account_status, where each poll's
        # outcome is kept: a restart must not reset it to the first step.
        failing = {a: f for a, f in self._status.failing(datetime.now(UTC)).items() if a in self._accounts}
        # More accounts than workers: spread the first polls over the interval, or they
        # all fall due in the same second of every interval and queue for the workers.
        schedule = PollSchedule(
            {a.id: a.poll_interval_seconds for a in self._accounts.values()},
            time.monotonic(),
            random.Random(),
            stagger=len(self._accounts) > self._settings.poll_workers,
            failing=failing,
        )
        for account_id, (failures, _) in failing.items():
            FAILURES.labels(account_id).set(failures)
        running: dict[Future[StepFailed | None], str] = {}
        if self._ownership is not None:
            self._ownership.start(self._release)
        health.set_ready(True)
        log.info(
            "fetcher.started", accounts=len(self._accounts), workers=self._settings.poll_workers, backing_off=len(failing)
        )
        refreshed_at = time.monotonic()
        ownership_moved_at: float | None = None
        with ThreadPoolExecutor(max_workers=self._settings.poll_workers, thread_name_prefix="poll") as pool:
            while not stop.is_set():
                health.beat()
                now = time.monotonic()
                if self._ownership is not None and self._ownership.changed.is_set():
                    self._ownership.changed.clear()
                    ownership_moved_at = now
                # A rebalance often comes in quick pairs (revoked, then the same partitions
                # back): the schedule follows ownership once it held still, so its mailboxes
                # keep their place in the schedule. Until then the polls themselves check
                # ownership, so a moved mailbox is never polled here meanwhile.
                settled = ownership_moved_at is None or now - ownership_moved_at >= OWNERSHIP_SETTLE_SECONDS
                refresh_due = self._refresh_accounts is not None and now - refreshed_at >= self._settings.accounts_refresh_seconds
                if settled and (ownership_moved_at is not None or refresh_due):
                    ownership_moved_at = None
                    refreshed_at = now
                    self._apply_account_changes(schedule)
                for account_id, due in schedule.take_due(time.monotonic()):
                    running[pool.submit(self._poll_in_worker, self._accounts[account_id], due)] = account_id
                until_next = schedule.seconds_until_next(time.monotonic())
                pause = min(1.0, until_next) if until_next is not None else 1.0
                if running:
                    done, _ = wait(running, timeout=pause, return_when=FIRST_COMPLETED)
                else:
                    stop.wait(pause)
                    done = set()
                for future in done:
                    account_id = running.pop(future)
                    failure = future.result()
                    delay = schedule.finished(account_id, time.monotonic(), ok=failure is None)
                    if failure is not None:
                        log.error(
                            "poll.failed",
                            account_id=account_id,
                            step=failure.step,
                            server_reply=failure.server_reply,
                            error=failure.message,
                            consecutive_failures=schedule.failures.get(account_id, 0),
                            retry_in_seconds=round(delay, 1),
                        )
            # Polls still queued for a worker never start: with more due than workers
            # (a large share of mailboxes, a slow server) the queue can hold minutes of
            # work, and an untouched mailbox is simply polled by its next owner. Polls in
            # flight finish (each bounded by the timeouts) before the producer closes and
            # before the partitions go to other replicas.
            for future in [f for f in running if f.cancel()]:
                del running[future]
            wait(running)
        if self._ownership is not None:
            self._ownership.close()
        self.close()

    def _owned(self, accounts: Mapping[str, Account]) -> dict[str, Account]:
        if self._ownership is None:
            return dict(accounts)
        return {account_id: accounts[account_id] for account_id in self._ownership.owned(accounts)}

    def _release(self, is_revoked: Callable[[str], bool]) -> None:
        """Return once no poll of a revoked account runs (called during a rebalance)."""
        deadline = time.monotonic() + self._settings.timeout_seconds * 2
        with self._polling_changed:
            while any(is_revoked(a) for a in self._polling):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("ownership.release_timed_out", polling=sorted(a for a in self._polling if is_revoked(a)))
                    return
                self._polling_changed.wait(min(remaining, 0.5))

    def _apply_account_changes(self, schedule: PollSchedule) -> None:
        """Pick up accounts added, changed, disabled or removed since the last look, and
        the mailboxes this replica gained or lost in a rebalance."""
        if self._refresh_accounts is not None:
            try:
                self._enabled = {a.id: a for a in self._refresh_accounts() if a.enabled}
            except Exception as exc:  # noqa: BLE001 - a database hiccup must not stop polling the known accounts
                log.warning("accounts.refresh_failed", error=f"{type(exc).__name__}: {exc}")
        accounts = self._owned(self._enabled)
        if accounts != self._accounts:
            log.info("accounts.changed", before=len(self._accounts), after=len(accounts))
            self._accounts = accounts
            schedule.set_accounts({a.id: a.poll_interval_seconds for a in accounts.values()}, time.monotonic())

    def close(self) -> None:
        """Flush and close the Kafka producer, unless it was handed in."""
        if self._owns_producer:
            self._producer.close(timeout=10)


def run(settings: FetcherSettings, health: Health, stop: threading.Event) -> None:
    """Poll the enabled stored accounts; changes to them are picked up while running."""
    store = stored_accounts(settings)
    ownership = None
    if settings.mailbox_ownership is MailboxOwnershipMode.CONSUMER_GROUP:
        ownership = MailboxOwnership(
            settings.kafka_bootstrap_servers,
            settings.group_id,
            session_timeout_seconds=settings.session_timeout_seconds,
            release_timeout_seconds=settings.timeout_seconds * 2,
        )
    fetcher = Fetcher(
        settings,
        store.enabled_accounts(),
        refresh_accounts=store.enabled_accounts,
        ownership=ownership,
        on_rotated_refresh_token=store.store_rotated_refresh_token,
    )
    fetcher.run(health, stop)


def stored_accounts(settings: FetcherSettings) -> AccountStore:
    """The account store with the configured encryption key(s)."""
    from mailintake.runtime.settings import load_settings
    from services.fetcher.password_cipher import cipher_from_settings
    from services.fetcher.settings import AccountEncryptionSettings

    cipher = cipher_from_settings(load_settings(AccountEncryptionSettings))
    return AccountStore(engine_for(settings.database_url.get_secret_value()), cipher)
