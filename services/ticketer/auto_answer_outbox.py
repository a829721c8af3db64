"""The auto-answer's PostgreSQL edge: queue it in the ticket's transaction; import templates.

Transactional outbox: :func:`queue_auto_answer` runs on the connection of the
transaction that creates the ticket, so the ticket and its auto-answer commit together
or not at all, and the sender loop (``services/sender``) delivers the row later. The
answer is also an outbound step of the ticket, with its Message-ID, so the history shows
it and a bounce of it finds the ticket. The store calls it once per new ticket::

    queue_auto_answer(connection, decision, number, self._settings)
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert

from mailintake.contracts.records import MailClassified
from services.ticketer.auto_answer_templates import TemplateText
from services.ticketer.auto_answers import (
    AUTO_ANSWER_KIND,
    AutoAnswer,
    NoAutoAnswer,
    TicketFacts,
    plan_auto_answer,
    why_not_answer,
)
from services.ticketer.settings import TicketerSettings
from services.ticketer.tables import AutoAnswerTemplate, OutboundMail, Ticket, TicketStep

# First key of the two-key advisory locks that serialise the rate cap per recipient.
# Two-key locks live apart from the one-key lock the migrations take.
_RECIPIENT_LOCK_NAMESPACE = 4181


def queue_auto_answer(
    connection: Connection, decision: MailClassified, ticket_number: int, settings: TicketerSettings
) -> AutoAnswer | NoAutoAnswer:
    """Queue the auto-answer to the mail that just opened ticket ``ticket_number``.

    Call it inside the transaction that created the ticket. Returns the queued values,
    or why nothing was queued (switched off, no template, loop/bulk/bounce, the
    per-recipient cap, a template that failed, or already queued for this mail: the
    insert is ON CONFLICT (dedupe_key) DO NOTHING, so a replay never queues twice).
    A template that fails to render skips the answer; it never fails the ticket.
    """
    reason = why_not_answer(decision, settings)
    if reason:
        return NoAutoAnswer(reason)  # the common case costs no query
    ticket = connection.execute(select(Ticket).where(Ticket.number == ticket_number)).one()
    facts = TicketFacts(
        number=ticket.number,
        reference=ticket.reference,
        subject=ticket.subject,
        requester=ticket.requester,
        category=ticket.category,
        priority=ticket.priority,
        resource=ticket.resource,
    )
    template_row = connection.execute(
        select(AutoAnswerTemplate).where(AutoAnswerTemplate.name == decision.ticket_options.auto_answer_template)
    ).first()
    template = (
        TemplateText(template_row.name, template_row.subject_template, template_row.body_template)
        if template_row is not None
        else None
    )
    recipient = decision.sender.lower()
    # Two replicas handling two mails of one sender at once would both see the count
    # below the cap; the lock (held to commit) makes the second wait for the first.
    connection.execute(select(func.pg_advisory_xact_lock(_RECIPIENT_LOCK_NAMESPACE, func.hashtext(recipient))))
    answers_in_window = connection.scalar(
        select(func.count())
        .select_from(OutboundMail)
        .where(
            OutboundMail.kind == AUTO_ANSWER_KIND,
            OutboundMail.recipient == recipient,
            OutboundMail.created_at > func.now() - timedelta(seconds=settings.auto_answer_window_seconds),
        )
    )
    plan = plan_auto_answer(decision, facts, template, settings, answers_in_window)
    if isinstance(plan, NoAutoAnswer):
        return plan
    queued = connection.execute(
        insert(OutboundMail).values(**plan.row()).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(OutboundMail.id)
    ).first()
    if queued is None:
        return NoAutoAnswer(f"already queued for this mail (dedupe key {plan.dedupe_key})")
    # The answer is part of the ticket's history from the moment it is queued; its
    # Message-ID there lets a reply or a bounce find the ticket.
    position = connection.scalar(
        select(func.coalesce(func.max(TicketStep.position), 0) + 1).where(TicketStep.ticket_number == ticket_number)
    )
    connection.execute(
        insert(TicketStep).values(
            ticket_number=ticket_number,
            position=position,
            direction="outbound",
            account_id=decision.account_id,
            message_id=plan.message_id,
            sender=plan.sender_address,
            subject=plan.subject,
            body_text=plan.body_text,
        )
    )
    return plan


def import_templates(connection: Connection, templates: list[TemplateText]) -> None:
    """Insert or replace ``templates`` (already checked by ``parse_template_file``) by name."""
    for template in templates:
        statement = insert(AutoAnswerTemplate).values(
            name=template.name, subject_template=template.subject, body_template=template.body
        )
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["name"],
                set_={
                    "subject_template": statement.excluded.subject_template,
                    "body_template": statement.excluded.body_template,
                    "updated_at": func.now(),
                },
            )
        )
