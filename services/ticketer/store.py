"""The ticketer's PostgreSQL edge: apply one decision in one transaction, exactly once.

The ledger row (account id + source id, Message-ID as second guard) is inserted first,
with ON CONFLICT DO NOTHING. If it already exists the mail was handled before: nothing
is written and the stored outcome is returned, so the replay re-emits the same event.
A concurrent replica handling the same mail blocks on the uncommitted ledger row and
then sees it, so two replicas cannot both create the ticket.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from mailintake.contracts.records import Decision, MailClassified, TicketEventKind
from services.ticketer.core import NewTicket, Outcome, format_reference, new_ticket, reference_number
from services.ticketer.settings import TicketerSettings, UnknownReferencePolicy
from services.ticketer.tables import TICKET_NUMBER_SEQUENCE, ProcessedMail, Ticket, TicketStep


class TicketStore:
    def __init__(self, engine: Engine, settings: TicketerSettings) -> None:
        self._engine = engine
        self._settings = settings

    def apply(self, decision: MailClassified) -> tuple[Outcome, bool]:
        """Apply ``decision``; return its outcome and whether this call wrote it (False on a replay)."""
        with self._engine.begin() as connection:
            claimed = connection.execute(
                insert(ProcessedMail)
                .values(
                    account_id=decision.account_id,
                    source_id=decision.source_id,
                    message_id=decision.message_id,
                    outcome="PENDING",
                )
                .on_conflict_do_nothing()
                .returning(ProcessedMail.source_id)
            ).first()
            if claimed is None:
                return self._recorded_outcome(connection, decision), False
            outcome = self._decide(connection, decision)
            connection.execute(
                update(ProcessedMail)
                .where(ProcessedMail.account_id == decision.account_id, ProcessedMail.source_id == decision.source_id)
                .values(
                    outcome=outcome.kind.value,
                    ticket_number=outcome.ticket_number,
                    subject=outcome.subject,
                    reason=outcome.reason,
                )
            )
            return outcome, True

    def _recorded_outcome(self, connection: Connection, decision: MailClassified) -> Outcome:
        guards = [ProcessedMail.source_id == decision.source_id]
        if decision.message_id:
            guards.append(ProcessedMail.message_id == decision.message_id)
        row = connection.execute(
            select(ProcessedMail).where(ProcessedMail.account_id == decision.account_id, or_(*guards)).limit(1)
        ).one()
        return Outcome(TicketEventKind(row.outcome), row.ticket_number, row.subject, row.reason)

    def _decide(self, connection: Connection, decision: MailClassified) -> Outcome:
        if decision.decision is Decision.REJECT:
            return Outcome(TicketEventKind.MAIL_REJECTED, None, decision.subject, decision.reason)
        if decision.decision is Decision.FOLLOW_UP:
            number = reference_number(decision.ticket_reference or "")
            ticket = connection.execute(
                select(Ticket).where(Ticket.number == number).with_for_update()
            ).first() if number is not None else None
            if ticket is not None:
                self._add_step(connection, number, decision)
                connection.execute(
                    update(Ticket).where(Ticket.number == number).values(status="open", updated_at=func.now())
                )
                return Outcome(TicketEventKind.STEP_ADDED, number, ticket.subject, None)
            if self._settings.unknown_reference is UnknownReferencePolicy.REJECT:
                return Outcome(
                    TicketEventKind.MAIL_REJECTED,
                    None,
                    decision.subject,
                    f"reference {decision.ticket_reference} names no ticket of this installation",
                )
        number = self._create_ticket(connection, new_ticket(decision))
        self._add_step(connection, number, decision)
        return Outcome(TicketEventKind.TICKET_CREATED, number, decision.subject, None)

    def _create_ticket(self, connection: Connection, fields: NewTicket) -> int:
        number = connection.scalar(TICKET_NUMBER_SEQUENCE.next_value())
        connection.execute(
            insert(Ticket).values(
                number=number,
                reference=format_reference(self._settings.instance_id, number),
                subject=fields.subject,
                requester=fields.requester,
                source_account_id=fields.source_account_id,
                category=fields.category,
                priority=fields.priority,
                resource=fields.resource,
                bundle_key=fields.bundle_key,
                opening_poll_cycle=fields.opening_poll_cycle,
            )
        )
        return number

    def _add_step(self, connection: Connection, number: int, decision: MailClassified) -> None:
        position = connection.scalar(
            select(func.coalesce(func.max(TicketStep.position), 0) + 1).where(TicketStep.ticket_number == number)
        )
        connection.execute(
            insert(TicketStep).values(
                ticket_number=number,
                position=position,
                direction="inbound",
                account_id=decision.account_id,
                source_id=decision.source_id,
                message_id=decision.message_id,
                sender=decision.sender,
                subject=decision.subject,
                body_text=decision.body_text,
            )
        )
