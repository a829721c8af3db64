"""The ticketer's pure core: what each classified mail does, given what PostgreSQL holds.

The store reads the facts one batch of mails needs (:class:`BatchFacts`) inside the
batch's transaction; :func:`plan_batch` decides every mail in order and returns one
:class:`Plan` per mail; the store applies the plans and reports what each one did
(:class:`AppliedMail`); :func:`events_for` turns that into ``ticket.events`` records.
No I/O happens here, so every rule of the account dialog is a plain function test.

A later mail of a batch sees what the earlier ones planned: the ticket a mail opens can
take the next mail of its bundle as a step, and a user or location one mail creates is
reused by the next mail from the same sender or domain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from mailintake.contracts.records import Decision, MailClassified, TicketEvent, TicketEventKind
from services.ticketer.settings import UnknownReferencePolicy

_REFERENCE_NUMBER = re.compile(r"-(\d+)\]$")


def format_reference(instance_id: str, number: int) -> str:
    """The tag written into subjects: ``[#mi-10042]``. The classifier's default pattern finds it."""
    return f"[#{instance_id}-{number}]"


def reference_number(reference: str) -> int | None:
    """The ticket number inside a reference as the classifier found it, or None."""
    match = _REFERENCE_NUMBER.search(reference)
    return int(match.group(1)) if match else None


def split_address(address: str) -> tuple[str, str]:
    """Local part and domain of a mail address, both lower-case; the domain may be empty."""
    local, _, domain = address.strip().lower().rpartition("@")
    if not local:  # no '@' at all: the whole address is the local part
        return domain, ""
    return local, domain


def base_login(local_part: str) -> str:
    """The login a user created from ``local_part`` gets while it is free: the local part."""
    return local_part or "user"


def numbered_logins(base: str, last_suffix: int, count: int) -> list[str]:
    """The ``count`` numbered logins of ``base`` up to ``last_suffix``, in order.

    Once ``max.mustermann`` is taken, users of that base get ``max.mustermann-2``,
    ``max.mustermann-3`` ...; the numbers come from a counter per base in PostgreSQL
    (``login_suffixes``), which starts at 1 (the base itself), so the first claim of two
    numbers ends at 3: ``numbered_logins("max.mustermann", 3, 2)``.
    """
    return [f"{base}-{suffix}" for suffix in range(last_suffix - count + 1, last_suffix + 1)]


def bundle_window(poll_cycle: int) -> tuple[int, int]:
    """The poll cycles a mail of ``poll_cycle`` bundles with: its own and the one before.

    A mail opened a ticket in cycle n; a mail with the same bundle key in cycle n or n+1
    becomes a step on it, one in n+2 or later opens a new ticket.
    """
    return poll_cycle - 1, poll_cycle


# --- what PostgreSQL holds ---------------------------------------------------


@dataclass(frozen=True)
class KnownTicket:
    number: int
    subject: str
    status: str
    bundle_key: str | None
    opening_poll_cycle: int | None


@dataclass(frozen=True)
class KnownUser:
    id: int
    login: str
    location_id: int | None


@dataclass(frozen=True)
class BatchFacts:
    """What the store read for one batch, under the locks the batch holds."""

    tickets: Mapping[int, KnownTicket] = field(default_factory=dict)
    """Tickets the batch may touch: those referenced, and bundle candidates."""
    users_by_email: Mapping[str, KnownUser] = field(default_factory=dict)
    """Users of the batch's senders, by lower-case email."""
    users_by_login: Mapping[str, KnownUser] = field(default_factory=dict)
    """The accounts' fallback users, by login."""
    locations_by_domain: Mapping[str, int] = field(default_factory=dict)
    tickets_by_message_id: Mapping[str, int] = field(default_factory=dict)
    """Tickets of the mails the batch's bounces name as their original (mails we sent)."""


# --- plans -------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedTicket:
    """A ticket the batch opens; its number is drawn when the batch is applied."""

    index: int


@dataclass(frozen=True)
class PlannedLocation:
    """A location/customer the batch creates for a sender's domain (or finds created meanwhile)."""

    domain: str


@dataclass(frozen=True)
class PlannedUser:
    """A user the batch creates for an unknown sender (or finds created meanwhile)."""

    email: str
    local_part: str
    display_name: str | None
    location: int | PlannedLocation | None
    account_id: str


TicketRef = int | PlannedTicket
UserRef = int | PlannedUser
LocationRef = int | PlannedLocation


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


@dataclass(frozen=True)
class OpenTicket:
    ticket: PlannedTicket
    fields: NewTicket
    owner: UserRef
    location: LocationRef | None
    creates_user: PlannedUser | None = None
    creates_location: PlannedLocation | None = None


@dataclass(frozen=True)
class AddStep:
    """The mail becomes the next step of a ticket, which is (re)opened."""

    ticket: TicketRef
    ticket_subject: str
    bundled: bool


@dataclass(frozen=True)
class AttachNote:
    """A bounce of a mail we sent becomes a note on that mail's ticket; the ticket keeps its status."""

    ticket: int
    ticket_subject: str
    reason: str


@dataclass(frozen=True)
class Reject:
    reason: str


Plan = OpenTicket | AddStep | AttachNote | Reject


def bounce_summary(mail: MailClassified) -> str:
    """How a bounce is described in the ledger and its events: status and original."""
    status = f" ({mail.bounce_status})" if mail.bounce_status else ""
    return f"bounce{status} of {mail.bounce_original_message_id or 'a mail it does not name'}"


def unattached_bounce_flag(mail: MailClassified) -> str | None:
    """The flag a bounce carries when it could not be attached to a ticket; None for other mails."""
    if not mail.bounce:
        return None
    return f"{bounce_summary(mail)}: no ticket of ours sent that mail, so it is handled as decided"


def new_ticket(decision: MailClassified) -> NewTicket:
    """The fields of the ticket ``decision`` opens, from the mail and the account's options.

    The bundle key is kept only when the account bundles, so a ticket opened with
    bundling off never takes steps from a later look-up.
    """
    options = decision.ticket_options
    bundles = options.auto_bundle and decision.decision is Decision.NEW_TICKET
    return NewTicket(
        subject=decision.subject or "(no subject)",
        requester=decision.sender,
        source_account_id=decision.account_id,
        category=options.category,
        priority=options.priority,
        resource=options.resource,
        bundle_key=decision.bundle_key if bundles else None,
        opening_poll_cycle=decision.poll_cycle,
    )


@dataclass
class _BatchState:
    """The facts plus what earlier mails of the batch planned."""

    facts: BatchFacts
    opened: list[tuple[PlannedTicket, NewTicket]] = field(default_factory=list)
    planned_users: dict[str, PlannedUser] = field(default_factory=dict)
    planned_locations: dict[str, PlannedLocation] = field(default_factory=dict)
    _stored_by_key: dict[str, list[KnownTicket]] = field(default_factory=dict)
    _opened_by_key: dict[str, list[tuple[PlannedTicket, NewTicket]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for ticket in self.facts.tickets.values():
            if ticket.bundle_key is not None:
                self._stored_by_key.setdefault(ticket.bundle_key, []).append(ticket)

    def open(self, planned: PlannedTicket, fields: NewTicket) -> None:
        self.opened.append((planned, fields))
        if fields.bundle_key is not None:
            self._opened_by_key.setdefault(fields.bundle_key, []).append((planned, fields))

    def bundle_ticket(self, bundle_key: str, poll_cycle: int) -> tuple[TicketRef, str] | None:
        """The ticket whose opening mail had ``bundle_key`` in this or the previous cycle.

        Should two qualify (possible only if mails of one key arrived out of order), the
        earlier opening cycle wins, then the lower number: every replica picks the same.
        Tickets already in PostgreSQL come before those this batch opens.
        """
        cycles = bundle_window(poll_cycle)
        stored = sorted(
            (t.opening_poll_cycle, t.number, t.subject)
            for t in self._stored_by_key.get(bundle_key, ())
            if t.opening_poll_cycle in cycles
        )
        if stored:
            _, number, subject = stored[0]
            return number, subject
        opened = [item for item in self._opened_by_key.get(bundle_key, ()) if item[1].opening_poll_cycle in cycles]
        if opened:
            planned, fields = min(opened, key=lambda item: (item[1].opening_poll_cycle, item[0].index))
            return planned, fields.subject
        return None

    def user_by_email(self, email: str) -> tuple[UserRef, LocationRef | None] | None:
        known = self.facts.users_by_email.get(email.lower())
        if known is not None:
            return known.id, known.location_id
        planned = self.planned_users.get(email.lower())
        if planned is not None:
            return planned, planned.location
        return None

    def location_for(self, domain: str) -> tuple[LocationRef, PlannedLocation | None]:
        """The domain's location, and the planned one if this mail is the first to need it."""
        existing = self.facts.locations_by_domain.get(domain)
        if existing is not None:
            return existing, None
        if domain in self.planned_locations:
            return self.planned_locations[domain], None
        planned = PlannedLocation(domain)
        self.planned_locations[domain] = planned
        return planned, planned


def plan_batch(
    mails: Sequence[MailClassified], facts: BatchFacts, unknown_reference: UnknownReferencePolicy
) -> list[Plan]:
    """One plan per mail of ``mails``, decided in order (see the module docstring)."""
    state = _BatchState(facts)
    return [_plan_one(mail, state, unknown_reference) for mail in mails]


def _plan_one(mail: MailClassified, state: _BatchState, unknown_reference: UnknownReferencePolicy) -> Plan:
    options = mail.ticket_options
    if mail.bounce and mail.bounce_original_message_id:
        # Before the decision: a bounce is rejected or opens a ticket by the loop/bulk
        # setting, and one quoting our reference would reopen it; as a note it does neither.
        number = state.facts.tickets_by_message_id.get(mail.bounce_original_message_id)
        ticket = state.facts.tickets.get(number) if number is not None else None
        if ticket is not None:
            return AttachNote(ticket.number, ticket.subject, f"{bounce_summary(mail)} attached as a note")
    if mail.decision is Decision.REJECT:
        return Reject(mail.reason or f"rejected by the classifier ({', '.join(mail.rules_fired)})")
    if mail.decision is Decision.FOLLOW_UP:
        number = reference_number(mail.ticket_reference or "")
        ticket = state.facts.tickets.get(number) if number is not None else None
        if ticket is not None:
            return AddStep(ticket.number, ticket.subject, bundled=False)
        if unknown_reference is UnknownReferencePolicy.REJECT:
            return Reject(f"reference {mail.ticket_reference} names no ticket of this installation")
        if options.no_new_tickets:
            return Reject(
                f"reference {mail.ticket_reference} names no ticket of this installation, and the account "
                "accepts follow-ups only (emails do not create new tickets)"
            )
        return _open_ticket(mail, state)
    if options.no_new_tickets:
        # The classifier rejects these already; the option governs ticket creation, so
        # the ticketer holds to it too, whatever a producer sends.
        return Reject("the account accepts follow-ups only (emails do not create new tickets)")
    if options.auto_bundle and mail.bundle_key:
        found = state.bundle_ticket(mail.bundle_key, mail.poll_cycle)
        if found is not None:
            ticket, subject = found
            return AddStep(ticket, subject, bundled=True)
    return _open_ticket(mail, state)


def _open_ticket(mail: MailClassified, state: _BatchState) -> Plan:
    options = mail.ticket_options
    local_part, domain = split_address(mail.sender)
    known = state.user_by_email(mail.sender)
    creates_user: PlannedUser | None = None
    creates_location: PlannedLocation | None = None
    if known is not None:
        owner, location = known
    elif options.create_user_from_local_part:
        location = None
        if options.create_location_from_domain and domain:
            location, creates_location = state.location_for(domain)
        creates_user = PlannedUser(
            email=mail.sender.lower(),
            local_part=local_part,
            display_name=mail.sender_name,
            location=location,
            account_id=mail.account_id,
        )
        state.planned_users[creates_user.email] = creates_user
        owner = creates_user
    elif options.fallback_user:
        fallback = state.facts.users_by_login.get(options.fallback_user)
        if fallback is None:
            return Reject(
                f"the sender {mail.sender} is unknown and the account's fallback user "
                f"'{options.fallback_user}' does not exist"
            )
        owner = fallback.id
        location = None
        if options.create_location_from_domain and domain:
            # The ticket belongs to the sender's customer; the shared fallback user keeps its own.
            location, creates_location = state.location_for(domain)
    else:
        return Reject(
            f"the sender {mail.sender} is unknown, and the account neither creates users nor names "
            "a ticket user for unknown senders"
        )
    planned = PlannedTicket(len(state.opened))
    fields = new_ticket(mail)
    state.open(planned, fields)
    return OpenTicket(planned, fields, owner, location, creates_user, creates_location)


# --- what the store did, and the events of it --------------------------------


@dataclass(frozen=True)
class AppliedMail:
    """What applying one mail's plan did; the ledger keeps its events."""

    kind: TicketEventKind
    ticket_number: int | None
    subject: str | None
    reason: str | None
    created_user_login: str | None = None
    created_location_domain: str | None = None


def event_id(account_id: str, source_id: str, kind: TicketEventKind) -> str:
    """The id of a mail's event of ``kind``: derived, so a replay's events are recognisably the same."""
    return f"{account_id}:{source_id}:{kind.value}"


def events_for(mail: MailClassified, applied: AppliedMail, occurred_at: datetime) -> list[TicketEvent]:
    """The ticket events of ``applied``: a created location and user first, then the ticket's."""

    def event(kind: TicketEventKind, reason: str | None) -> TicketEvent:
        return TicketEvent(
            event_id=event_id(mail.account_id, mail.source_id, kind),
            kind=kind,
            occurred_at=occurred_at,
            account_id=mail.account_id,
            source_id=mail.source_id,
            ticket_number=applied.ticket_number,
            subject=applied.subject,
            reason=reason,
        )

    events = []
    if applied.created_location_domain is not None:
        events.append(event(TicketEventKind.LOCATION_CREATED, f"location {applied.created_location_domain} created"))
    if applied.created_user_login is not None:
        events.append(
            event(TicketEventKind.USER_CREATED, f"user {applied.created_user_login} created for {mail.sender.lower()}")
        )
    events.append(event(applied.kind, applied.reason))
    return events
