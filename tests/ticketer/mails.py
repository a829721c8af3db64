"""Building ``mail.classified`` records for the ticketer's tests, as the classifier would."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from mailintake.contracts.records import Decision, MailClassified, SenderIdentity, TicketOptions
from services.classifier.core import bundle_key


def classified(
    account_id: str,
    source_id: str,
    *,
    sender: str | None = None,
    subject: str = "Printer jammed",
    poll_cycle: int = 1,
    decision: Decision = Decision.NEW_TICKET,
    reference: str | None = None,
    reason: str | None = None,
    message_id: str | None = "",
    sender_name: str | None = None,
    body: str | None = None,
    **options: object,
) -> MailClassified:
    """A classified mail; ``options`` are TicketOptions fields. The Message-ID defaults to
    one derived from account and source id; pass None for a mail without one. The sender
    defaults to one of the account's own domain, so tests sharing a database keep apart."""
    sender = (sender or f"anna@{account_id}.test").lower()
    return MailClassified(
        account_id=account_id,
        source_id=source_id,
        message_id=f"<{source_id}.{account_id}@test.mailintake>" if message_id == "" else message_id,
        poll_cycle=poll_cycle,
        fetched_at=datetime.now(UTC),
        decision=decision,
        rules_fired=[{"NEW_TICKET": "new-ticket", "FOLLOW_UP": "ticket-reference-in-subject", "REJECT": "no-new-tickets"}[decision]],
        reason=reason if reason is not None else ("rejected by test" if decision is Decision.REJECT else None),
        sender=sender,
        sender_name=sender_name,
        subject=subject,
        bundle_key=bundle_key(account_id, sender, subject) if decision is Decision.NEW_TICKET else None,
        ticket_reference=reference,
        body_text=body if body is not None else f"body of {source_id}",
        raw_sha256=hashlib.sha256(f"{account_id}/{source_id}".encode()).hexdigest(),
        sender_identity=SenderIdentity(name="Desk", address="desk@helpdesk.test"),
        ticket_options=TicketOptions(**options),
    )
