"""The ticketer's pure core: references, new-ticket fields and the events of an outcome."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from mailintake.contracts.records import MailClassified, TicketEvent, TicketEventKind

_REFERENCE_NUMBER = re.compile(r"-(\d+)\]$")


def format_reference(instance_id: str, number: int) -> str:
    """The tag written into subjects: ``[#mi-10042]``. The classifier's default pattern finds it."""
    return f"[#{instance_id}-{number}]"


def reference_number(reference: str) -> int | None:
    """The ticket number inside a reference as the classifier found it, or None."""
    match = _REFERENCE_NUMBER.search(reference)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class NewTicket:
    subject: str
    requester: str
    source_account_id: str
    category: str | None
    priority: str | None
    resource: str | None
    bundle_key: str | None
    opening_poll_cycle: int


def new_ticket(decision: MailClassified) -> NewTicket:
    """The fields of the ticket ``decision`` opens, from the mail and the account's options."""
    options = decision.ticket_options
    return NewTicket(
        subject=decision.subject or "(no subject)",
        requester=decision.sender,
        source_account_id=decision.account_id,
        category=options.category,
        priority=options.priority,
        resource=options.resource,
        bundle_key=decision.bundle_key,
        opening_poll_cycle=decision.poll_cycle,
    )


@dataclass(frozen=True)
class Outcome:
    """What handling one mail did; stored in the ledger so a replay can re-emit it."""

    kind: TicketEventKind
    ticket_number: int | None
    subject: str | None
    reason: str | None


def events_for(account_id: str, source_id: str, outcome: Outcome, occurred_at: datetime | None = None) -> list[TicketEvent]:
    """The ticket events of ``outcome``. The event id is derived, not random, so the
    events a replay re-emits are recognisably the same."""
    return [
        TicketEvent(
            event_id=f"{account_id}:{source_id}:{outcome.kind.value}",
            kind=outcome.kind,
            occurred_at=occurred_at or datetime.now(UTC),
            account_id=account_id,
            source_id=source_id,
            ticket_number=outcome.ticket_number,
            subject=outcome.subject,
            reason=outcome.reason,
        )
    ]
