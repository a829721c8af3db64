"""The classifier's pure core: one ``MailRaw`` in, one ``MailClassified`` out."""

from __future__ import annotations

import json

from mailintake.contracts.records import Decision, MailClassified, MailRaw
from services.classifier.parsing import parse_mail
from services.classifier.rules import RuleContext, decide


def bundle_key(account_id: str, sender: str, subject: str) -> str:
    """The key under which mails bundle: same account, sender and subject.

    A JSON array keeps the three parts unambiguous whatever characters they hold.
    """
    return json.dumps([account_id, sender, subject], ensure_ascii=False, separators=(",", ":"))


def classify(mail: MailRaw, raw: bytes, context: RuleContext) -> MailClassified:
    """Decide what the ticketer does with ``mail`` whose bytes are ``raw``."""
    parsed = parse_mail(raw)
    outcome = decide(parsed, context)
    return MailClassified(
        account_id=mail.account_id,
        source_id=mail.source_id,
        message_id=mail.message_id or parsed.message_id,
        poll_cycle=mail.poll_cycle,
        fetched_at=mail.fetched_at,
        decision=outcome.decision,
        rules_fired=list(outcome.rules_fired),
        reason=outcome.reason,
        sender=parsed.sender,
        sender_name=parsed.sender_name,
        subject=parsed.subject,
        bundle_key=bundle_key(mail.account_id, parsed.sender, parsed.subject)
        if outcome.decision is Decision.NEW_TICKET
        else None,
        ticket_reference=outcome.ticket_reference,
        body_text=parsed.body_text,
        raw_sha256=parsed.raw_sha256,
        sender_identity=mail.sender_identity,
        ticket_options=mail.ticket_options,
    )


def output_key(decision: MailClassified) -> str:
    """Partition key: a bundle stays on one partition, a ticket's follow-ups on one."""
    if decision.decision is Decision.NEW_TICKET and decision.bundle_key:
        return decision.bundle_key
    if decision.decision is Decision.FOLLOW_UP and decision.ticket_reference:
        return decision.ticket_reference
    return f"{decision.account_id}:{decision.source_id}"
