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
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from mailintake.database import engine_for
from mailintake.runtime.http_endpoint import Health
from services.sender.core import ClaimedMail, Delivered, GiveUp, NotAMail, NotDelivered, after_failure, outbound_message
from services.sender.outbox import claim_next, record_delivered, record_failed
from services.sender.settings import SenderSettings
from services.sender.smtp_transport import SmtpTransport

ATTEMPTS = Counter("mailintake_sender_attempts_total", "Delivery attempts by outcome", ["outcome"])

log = structlog.get_logger(__name__)


def deliver_one(engine: Engine, settings: SenderSettings, transport: SmtpTransport, mail: ClaimedMail) -> None:
    """Send one claimed mail and record what happened."""
    result: Delivered | NotDelivered
    try:
        message = outbound_message(mail, datetime.now(UTC), settings.instance_id)
    except NotAMail as error:
        result = NotDelivered(str(error), permanent=True)
    else:
        result = transport.send(mail, message)
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
    engine: Engine, settings: SenderSettings, transport: SmtpTransport, stop: threading.Event | None = None
) -> int:
    """Claim and send due mails until none is due (or ``stop`` is set); return how many were claimed."""
    claimed = 0
    try:
        while stop is None or not stop.is_set():
            mail = claim_next(engine, settings.lease_seconds, settings.max_attempts)
            if mail is None:
                break
            claimed += 1
            deliver_one(engine, settings, transport, mail)
    finally:
        transport.close()  # an idle submission connection would only time out
    return claimed


def run(settings: SenderSettings, health: Health, stop: threading.Event) -> None:
    engine = engine_for(settings.database_url.get_secret_value())
    transport = SmtpTransport(settings)
    log.info("sender.ready", smtp=f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security.value})")
    while not stop.is_set():
        health.beat()
        try:
            claimed = deliver_due(engine, settings, transport, stop)
            health.set_ready(True)
        except SQLAlchemyError as error:
            claimed = 0
            health.set_ready(False, f"database: {type(error).__name__}")
            log.error("sender.database_error", error=str(error).splitlines()[0])
        if claimed == 0:
            stop.wait(settings.poll_interval_seconds)
