"""The sender loop (``mailintake run sender``): deliver due outbox rows over SMTP.

Replicas share the work through ``SELECT ... FOR UPDATE SKIP LOCKED`` and a lease
(``outbox.py``), so two replicas never claim the same row at once. A failed attempt is
recorded with the server's exact reply and retried with exponential backoff until
``max_attempts``; a refused recipient or message is given up at once.

Delivery is at least once, not exactly once. The window: the server has accepted the
mail (250 after DATA) but the sender dies, or loses the database, before the row is
marked sent. The row's lease then expires and a replica sends the mail again. The
window is one UPDATE long; a resend is the same mail with the same Message-ID, so
mail programs that suppress duplicates by Message-ID show it once. (Making SMTP and
PostgreSQL commit together is not possible; the other order, marking before sending,
would lose mails instead of doubling them.) A lease that runs out while a slow server
is still talking has the same effect, which is why ``lease_seconds`` must exceed the
longest conversation.

A mail of an OAuth2 mail account (``outbound_mails.account_id``) goes over a connection
of that account's own, logged in with SASL XOAUTH2/OAUTHBEARER and its access token
(:class:`OAuth2Senders`); every other mail uses the service's SMTP login.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from mailintake.database import engine_for
from mailintake.runtime.http_endpoint import Health
from services.fetcher.account import OAUTH2_METHODS
from services.fetcher.account_store import AccountStore, StoredAccountInvalid
from services.fetcher.oauth_tokens import TokenBroker, TokenRefused
from services.fetcher.password_cipher import EncryptionKeyError, PasswordCipher, PasswordDecryptionError
from services.fetcher.tables import StoredAccount
from services.sender.core import ClaimedMail, Delivered, GiveUp, NotAMail, NotDelivered, after_failure, outbound_message
from services.sender.outbox import claim_next, record_delivered, record_failed
from services.sender.settings import SenderSettings
from services.sender.smtp_scopes import smtp_scopes
from services.sender.smtp_transport import SmtpTransport

ATTEMPTS = Counter("mailintake_sender_attempts_total", "Delivery attempts by outcome", ["outcome"])

log = structlog.get_logger(__name__)


class OAuth2Senders:
    """SMTP connections that log in as an OAuth2 mail account: SASL XOAUTH2 or OAUTHBEARER with
    the account's access token, from the token layer (cached, refreshed, a rotated refresh
    token stored). Mails of other accounts, and of none, go through the service's own login.

    The accounts' encryption key is read on the first mail of an OAuth2 account only.
    """

    def __init__(self, engine: Engine, settings: SenderSettings, cipher: Callable[[], PasswordCipher] | None = None) -> None:
        self._engine = engine
        self._settings = settings
        self._cipher = cipher or _cipher_from_environment
        self._store: AccountStore | None = None
        self._tokens: TokenBroker | None = None
        self._transports: dict[str, SmtpTransport] = {}

    def transport_for(self, account_id: str | None) -> SmtpTransport | None:
        """The account's own transport, or None when the service's login sends its mail."""
        if account_id is None or not self._authenticates_with_oauth2(account_id):
            return None
        transport = self._transports.get(account_id)
        if transport is None:
            transport = self._transports[account_id] = SmtpTransport(
                self._settings, bearer=lambda: self._bearer(account_id), on_bearer_refused=lambda: self._forget(account_id)
            )
        return transport

    def _authenticates_with_oauth2(self, account_id: str) -> bool:
        # The method alone, from the settings column: no key needed for the other accounts.
        with self._engine.connect() as connection:
            method = connection.scalar(
                select(StoredAccount.settings["authentication"].astext).where(StoredAccount.id == account_id)
            )
        return method in {m.value for m in OAUTH2_METHODS}

    def _bearer(self, account_id: str) -> tuple[str, str]:
        try:
            if self._store is None:
                self._store = AccountStore(self._engine, self._cipher())
                self._tokens = TokenBroker(
                    timeout=self._settings.smtp_timeout_seconds,
                    on_rotated_refresh_token=self._store.store_rotated_refresh_token,
                )
            account = self._store.get(account_id)
        except (EncryptionKeyError, PasswordDecryptionError, StoredAccountInvalid) as error:
            raise TokenRefused(None, str(error), error_code="not_configured") from None
        if account is None:
            raise TokenRefused(None, f"the account {account_id!r} was deleted", error_code="not_configured")
        assert self._tokens is not None
        # SMTP logs in as the mailbox (a shared mailbox's own address, with the delegate's token).
        return account.username, self._tokens.access_token(account, smtp_scopes(account))

    def _forget(self, account_id: str) -> None:
        if self._tokens is not None:
            self._tokens.forget(account_id)

    def close(self) -> None:
        for transport in self._transports.values():
            transport.close()


def _cipher_from_environment() -> PasswordCipher:
    from mailintake.runtime.settings import load_settings
    from services.fetcher.password_cipher import cipher_from_settings
    from services.fetcher.settings import AccountEncryptionSettings

    return cipher_from_settings(load_settings(AccountEncryptionSettings))


def deliver_one(
    engine: Engine,
    settings: SenderSettings,
    transport: SmtpTransport,
    mail: ClaimedMail,
    oauth2_senders: OAuth2Senders | None = None,
) -> None:
    """Send one claimed mail and record what happened."""
    result: Delivered | NotDelivered
    try:
        message = outbound_message(mail, datetime.now(UTC), settings.instance_id)
    except NotAMail as error:
        result = NotDelivered(str(error), permanent=True)
    else:
        own = oauth2_senders.transport_for(mail.account_id) if oauth2_senders is not None else None
        result = (own or transport).send(mail, message)
    fields = {"outbox_id": mail.id, "message_id": mail.message_id, "attempt": mail.attempts}
    if isinstance(result, Delivered):
        kept = record_delivered(engine, mail, result.reply)
        ATTEMPTS.labels("sent").inc()
        log.info("mail.sent", smtp_reply=result.reply, **fields)
    else:
        next_step = after_failure(
            mail.attempts, result.permanent, settings.max_attempts, settings.retry_base_seconds, settings.retry_max_seconds
        )
        kept = record_failed(engine, mail, result.reply, next_step)
        outcome = "failed" if isinstance(next_step, GiveUp) else "retry"
        ATTEMPTS.labels(outcome).inc()
        log.warning("mail.not_sent", smtp_reply=result.reply, outcome=outcome, next_step=str(next_step), **fields)
    if not kept:
        log.error("mail.claim_lost", reason="the lease ran out before the outcome was recorded; another sender took the row over", **fields)


def deliver_due(
    engine: Engine,
    settings: SenderSettings,
    transport: SmtpTransport,
    stop: threading.Event | None = None,
    oauth2_senders: OAuth2Senders | None = None,
) -> int:
    """Claim and send due mails until none is due (or ``stop`` is set); return how many were claimed."""
    claimed = 0
    try:
        while stop is None or not stop.is_set():
            mail = claim_next(engine, settings.lease_seconds, settings.max_attempts)
            if mail is None:
                break
            claimed += 1
            deliver_one(engine, settings, transport, mail, oauth2_senders)
    finally:
        transport.close()  # an idle submission connection would only time out
        if oauth2_senders is not None:
            oauth2_senders.close()
    return claimed


def run(settings: SenderSettings, health: Health, stop: threading.Event) -> None:
    engine = engine_for(settings.database_url.get_secret_value())
    transport = SmtpTransport(settings)
    oauth2_senders = OAuth2Senders(engine, settings)
    log.info("sender.ready", smtp=f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security.value})")
    while not stop.is_set():
        health.beat()
        try:
            claimed = deliver_due(engine, settings, transport, stop, oauth2_senders)
            health.set_ready(True)
        except SQLAlchemyError as error:
            claimed = 0
            health.set_ready(False, f"database: {type(error).__name__}")
            log.error("sender.database_error", error=str(error).splitlines()[0])
        if claimed == 0:
            stop.wait(settings.poll_interval_seconds)
