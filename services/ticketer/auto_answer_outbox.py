"""The auto-answer's PostgreSQL edge: queue it in the ticket's transaction; import templates.

Transactional outbox: :func:`queue_auto_answer` runs on the connection of the
transaction that creates the ticket, so the ticket and its auto-answer commit together
or not at all, and the sender loop (``services/sender``) delivers the row later. The
answer is also an outbound step of the ticket, with its Message-ID, so the history shows
it and a bounce of it finds the ticket. The store calls it once per batch, with every
ticket the batch opened::

    queue_auto_answers(connection, [(decision, number), ...], self._settings)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import cast

from sqlalchemy import BigInteger, Connection, Text, func, select
from sqlalchemy.dialects.postgresql import insert

from mailintake.contracts.records import MailClassified
from mailintake.database.advisory_locks import lock_in_order
from mailintake.database.array_parameters import in_array
from mailintake.database.bulk_copy import copy_rows
from services.ticketer.auto_answer_templates import TemplateText
from services.ticketer.auto_answers import (
    AUTO_ANSWER_KIND,
    AutoAnswer,
    NoAutoAnswer,
    TicketFacts,
    dedupe_key,
    plan_auto_answer,
    why_not_answer,
)
from services.ticketer.settings import TicketerSettings
from services.ticketer.store import last_step_positions
from services.ticketer.tables import AutoAnswerTemplate, OutboundMail, Ticket, TicketStep

# First key of the two-key advisory locks that serialise the rate cap per recipient.
# Two-key locks live apart from the one-key lock the migrations take.
_RECIPIENT_LOCK_NAMESPACE = 4181


def queue_auto_answer(
    connection: Connection, decision: MailClassified, ticket_number: int, settings: TicketerSettings
) -> AutoAnswer | NoAutoAnswer:
    """Queue the auto-answer to the mail that just opened ticket ``ticket_number``: one
    ticket's :func:`queue_auto_answers`."""
    return queue_auto_answers(connection, [(decision, ticket_number)], settings)[0]


def queue_auto_answers(
    connection: Connection, openings: Sequence[tuple[MailClassified, int]], settings: TicketerSettings
) -> list[AutoAnswer | NoAutoAnswer]:
    """Queue the auto-answers to the mails that just opened tickets, one per (mail, ticket
    number) of ``openings``; what was queued for each, in order, or why nothing was.

    Call it inside the transaction that created the tickets. Reasons for no answer:
    switched off, no template, loop/bulk/bounce, the per-recipient cap, a template that
    failed, or already queued for this mail (found by its dedupe key, so a replay never
    queues twice). A template that fails to render skips the answer; it never fails the
    tickets.

    A batch costs the same statements however many tickets it opened: the tickets, the
    templates, the recipients' locks, their answers in the window, the answers already
    queued for these mails, the rows, the tickets' last step positions and the outbound
    steps, each one statement for all. Answers planned earlier in the batch count
    against the cap of later mails of the same recipient.
    """
    results: list[AutoAnswer | NoAutoAnswer | None] = [None] * len(openings)
    due: list[int] = []
    for index, (decision, _number) in enumerate(openings):
        reason = why_not_answer(decision, settings)
        if reason:
            results[index] = NoAutoAnswer(reason)  # the common case costs no query
        else:
            due.append(index)
    if not due:
        return cast(list[AutoAnswer | NoAutoAnswer], results)

    numbers = [openings[i][1] for i in due]
    tickets = {
        row.number: row
        for row in connection.execute(select(Ticket).where(in_array(Ticket.number, numbers, BigInteger)))
    }
    names = sorted({openings[i][0].ticket_options.auto_answer_template or "" for i in due})
    templates = {
        row.name: TemplateText(row.name, row.subject_template, row.body_template)
        for row in connection.execute(select(AutoAnswerTemplate).where(in_array(AutoAnswerTemplate.name, names, Text)))
    }
    recipients = sorted({openings[i][0].sender.lower() for i in due})
    # Two replicas handling two mails of one sender at once would both see the count
    # below the cap; the lock per recipient (held to commit) makes the second wait.
    lock_in_order(connection, _RECIPIENT_LOCK_NAMESPACE, recipients)
    in_window = dict(
        connection.execute(
            select(OutboundMail.recipient, func.count())
            .where(
                OutboundMail.kind == AUTO_ANSWER_KIND,
                in_array(OutboundMail.recipient, recipients, Text),
                OutboundMail.created_at > func.now() - timedelta(seconds=settings.auto_answer_window_seconds),
            )
            .group_by(OutboundMail.recipient)
        ).all()
    )
    keys = {i: dedupe_key(openings[i][0].account_id, openings[i][0].source_id, AUTO_ANSWER_KIND) for i in due}
    queued_before = set(
        connection.scalars(
            select(OutboundMail.dedupe_key).where(in_array(OutboundMail.dedupe_key, list(keys.values()), Text))
        )
    )

    planned: dict[int, AutoAnswer] = {}
    for index in due:
        decision, number = openings[index]
        if keys[index] in queued_before:
            results[index] = NoAutoAnswer(f"already queued for this mail (dedupe key {keys[index]})")
            continue
        ticket = tickets[number]
        facts = TicketFacts(
            number=ticket.number,
            reference=ticket.reference,
            subject=ticket.subject,
            requester=ticket.requester,
            category=ticket.category,
            priority=ticket.priority,
            resource=ticket.resource,
        )
        recipient = decision.sender.lower()
        template = templates.get(decision.ticket_options.auto_answer_template or "")
        plan = plan_auto_answer(decision, facts, template, settings, in_window.get(recipient, 0))
        results[index] = plan
        if isinstance(plan, AutoAnswer):
            planned[index] = plan
            in_window[recipient] = in_window.get(recipient, 0) + 1
    if not planned:
        return cast(list[AutoAnswer | NoAutoAnswer], results)

    # COPY, since a multi-row INSERT of a whole batch is new SQL for psycopg to convert
    # every time (a quarter of the ticketer's CPU with every mail answered). No ON
    # CONFLICT: the answers queued before were found above, and one queued meanwhile by
    # another transaction (the same mail, handled twice at once) fails this one with a
    # unique violation on the dedupe key, which the store retries; the retry finds the mail
    # in the ledger.
    copy_rows(connection, OutboundMail.__table__, [plan.row() for plan in planned.values()])
    # The answer is part of the ticket's history from the moment it is queued; its
    # Message-ID there lets a reply or a bounce find the ticket.
    last_positions = last_step_positions(connection, [plan.ticket_number for plan in planned.values()])
    steps = []
    for index, plan in planned.items():
        position = last_positions.get(plan.ticket_number, 0) + 1
        last_positions[plan.ticket_number] = position
        steps.append(
            dict(
                ticket_number=plan.ticket_number,
                position=position,
                direction="outbound",
                account_id=openings[index][0].account_id,
                message_id=plan.message_id,
                sender=plan.sender_address,
                subject=plan.subject,
                body_text=plan.body_text,
            )
        )
    copy_rows(connection, TicketStep.__table__, steps)
    return cast(list[AutoAnswer | NoAutoAnswer], results)


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
