"""The sender's PostgreSQL edge: claim a due outbox row under a lease, record the outcome.

A claim is one short transaction: ``SELECT ... FOR UPDATE SKIP LOCKED`` picks a due
row no other replica is claiming at that moment, and the same statement sets it to
``sending`` with ``next_attempt_at`` pushed out by the lease and ``attempts`` + 1.
After the commit other replicas see a row that is not due, so no lock is held while
the SMTP conversation runs. The outcome is written only if the row still carries this
claim (same status and attempt number): a sender whose lease ran out does not
overwrite the replica that took over.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, func, select, update

from services.sender.core import ClaimedMail, GiveUp, RetryLater
from services.ticketer.tables import OutboundMail

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"


def claim_next(engine: Engine, lease_seconds: float, max_attempts: int) -> ClaimedMail | None:
    """Claim the longest-due mail, or return None when nothing is due.

    Due means pending and its time has come, or sending with an expired lease (its
    sender died mid-send). A row whose last allowed attempt died that way stays
    ``sending``: sending it yet again is what ``max_attempts`` rules out.
    """
    due = (
        select(OutboundMail.id)
        .where(
            OutboundMail.status.in_((PENDING, SENDING)),
            OutboundMail.next_attempt_at <= func.now(),
            OutboundMail.attempts < max_attempts,
        )
        .order_by(OutboundMail.next_attempt_at, OutboundMail.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    with engine.begin() as connection:
        row = connection.execute(
            update(OutboundMail)
            .where(OutboundMail.id == due)
            .values(
                status=SENDING,
                attempts=OutboundMail.attempts + 1,
                next_attempt_at=func.now() + timedelta(seconds=lease_seconds),
            )
            .returning(*OutboundMail.__table__.columns)
        ).first()
    if row is None:
        return None
    return ClaimedMail(
        id=row.id,
        attempts=row.attempts,
        kind=row.kind,
        sender_name=row.sender_name,
        sender_address=row.sender_address,
        recipient=row.recipient,
        subject=row.subject,
        message_id=row.message_id,
        in_reply_to=row.in_reply_to,
        body_text=row.body_text,
        account_id=row.account_id,
    )


def _still_ours(mail: ClaimedMail):  # noqa: ANN202 - a SQLAlchemy where-clause
    return (OutboundMail.id == mail.id) & (OutboundMail.status == SENDING) & (OutboundMail.attempts == mail.attempts)


def record_delivered(engine: Engine, mail: ClaimedMail, reply: str) -> bool:
    """Mark ``mail`` sent with the server's reply; False if the claim was lost meanwhile."""
    with engine.begin() as connection:
        result = connection.execute(
            update(OutboundMail).where(_still_ours(mail)).values(status=SENT, sent_at=func.now(), last_smtp_reply=reply)
        )
    return result.rowcount == 1


def record_failed(engine: Engine, mail: ClaimedMail, reply: str, next_step: RetryLater | GiveUp) -> bool:
    """Record a failed attempt: due again after the delay, or given up. False if the claim was lost."""
    values: dict[str, object] = {"last_smtp_reply": reply}
    if isinstance(next_step, RetryLater):
        values.update(status=PENDING, next_attempt_at=func.now() + timedelta(seconds=next_step.delay_seconds))
    else:
        values.update(status=FAILED)
    with engine.begin() as connection:
        result = connection.execute(update(OutboundMail).where(_still_ours(mail)).values(**values))
    return result.rowcount == 1
