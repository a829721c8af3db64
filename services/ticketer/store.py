"""The ticketer's PostgreSQL edge: apply a batch of decisions in one transaction, each exactly once.

Per batch, in one transaction:

1. read the ledger: a mail already recorded (by account and source id, or by account
   and Message-ID, the second guard) is a replay: nothing is written and the events
   stored with it are returned, so the replay re-emits the very same events;
2. take a transaction-level advisory lock per bundle key the batch may open a ticket
   for, in sorted order, then read the facts (:class:`BatchFacts`): referenced tickets
   and bundle candidates (``FOR UPDATE``, since steps are appended), the highest step
   positions, the senders' users, fallback users and the domains' locations;
3. let the pure core plan every fresh mail (:func:`plan_batch`);
4. apply the plans: locations and users (insert-or-find, so a concurrent replica's row
   is reused, never duplicated), ticket numbers, tickets, steps, reopenings, queued
   auto-answers, and last the ledger rows with the events.

Why it is exactly once: the ledger rows commit with the effects or not at all. A replica
that handles the same mail concurrently (a rebalance can briefly give one partition to
two workers) either blocks on our uncommitted rows and then fails on the ledger's unique
key, or runs first and makes us fail; the failed transaction is retried whole and then
finds the mail recorded. The bundle lock makes the bundle look-up and the new ticket one
step, so two workers cannot both open a ticket for one bundle; users and locations are
inserted with ``ON CONFLICT DO NOTHING`` and re-read, so two replicas creating the same
user end with one row, and each learns whether it created it.

A transaction that fails for such a race (deadlock, unique violation, serialization) or
because PostgreSQL went away is rolled back and retried whole; nothing of a failed
attempt survives, so the retry decides afresh.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from psycopg import errors as pg_errors
from sqlalchemy import BigInteger, Connection, Engine, Integer, Text, and_, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError

from mailintake.contracts.records import Decision, MailClassified, TicketEvent, TicketEventKind
from mailintake.database.advisory_locks import lock_in_order
from mailintake.database.array_parameters import in_array, unnested
from mailintake.database.bulk_copy import copy_rows
from mailintake.outbound_mail import ticket_number_of_message_id
from services.ticketer.core import (
    AppliedMail,
    AttachNote,
    BatchFacts,
    KnownTicket,
    KnownUser,
    OpenTicket,
    Plan,
    PlannedLocation,
    PlannedTicket,
    PlannedUser,
    Reject,
    base_login,
    bundle_window,
    event_id,
    events_for,
    format_reference,
    numbered_logins,
    plan_batch,
    reference_number,
    split_address,
    unattached_bounce_flag,
)
from services.ticketer.settings import TicketerSettings
from services.ticketer.tables import (
    TICKET_NUMBER_SEQUENCE,
    Location,
    LoginSuffix,
    OutboundMail,
    ProcessedMail,
    Ticket,
    TicketStep,
    User,
)

log = structlog.get_logger(__name__)

# First key of the two-key advisory locks on bundle keys; other modules use other
# namespaces (the auto-answer's per-recipient lock is 4181), the migrations a one-key lock.
BUNDLE_LOCK_NAMESPACE = 4180

# Races with another replica: the whole transaction is retried and then sees its result.
_RACE_ERRORS = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.UniqueViolation)
_MAX_RACE_RETRIES = 8


@dataclass(frozen=True)
class BatchItem:
    """One mail to apply, with the ticket the window join found for its bundle (if any)."""

    mail: MailClassified
    bundle_hint: int | None = None


@dataclass(frozen=True)
class HandledMail:
    """The events of one mail, and whether this call wrote them (False: a replay)."""

    mail: MailClassified
    events: list[TicketEvent]
    written: bool

    @property
    def opened_ticket(self) -> int | None:
        """The ticket the mail opened (on a replay too), or None."""
        for event in self.events:
            if event.kind is TicketEventKind.TICKET_CREATED:
                return event.ticket_number
        return None


class TicketStore:
    def __init__(self, engine: Engine, settings: TicketerSettings, *, connection_outage_seconds: float = 300.0) -> None:
        self._engine = engine
        self._settings = settings
        self._outage_seconds = connection_outage_seconds

    def apply_batch(self, items: Sequence[BatchItem]) -> list[HandledMail]:
        """Apply ``items`` in one transaction; one :class:`HandledMail` per item, in order.

        Retries the whole transaction after a race with another replica, and while
        PostgreSQL is unreachable (up to ``connection_outage_seconds``); raises otherwise.
        """
        races = 0
        outage_started: float | None = None
        while True:
            try:
                with self._engine.begin() as connection:
                    return _BatchTransaction(connection, self._settings).run(items)
            except DBAPIError as error:
                if isinstance(error.orig, _RACE_ERRORS) and races < _MAX_RACE_RETRIES:
                    races += 1
                    log.info("ticketer.batch_retried", reason=type(error.orig).__name__, attempt=races)
                    time.sleep(0.05 * races)
                    continue
                if error.connection_invalidated or isinstance(error.orig, pg_errors.OperationalError):
                    outage_started = outage_started or time.monotonic()
                    if time.monotonic() - outage_started < self._outage_seconds:
                        log.warning("ticketer.database_unreachable", error=str(error.orig).strip()[:300])
                        time.sleep(1.0)
                        continue
                raise


class _BatchTransaction:
    """One attempt at one batch, on one connection inside a transaction."""

    def __init__(self, connection: Connection, settings: TicketerSettings) -> None:
        self._c = connection
        self._settings = settings
        self._now = datetime.now(UTC)

    def run(self, items: Sequence[BatchItem]) -> list[HandledMail]:
        recorded = self._recorded_events(items)
        fresh: list[int] = []
        earlier: dict[tuple[str, str], int] = {}  # (account, source id or Message-ID) -> index of its first mail
        copies: dict[int, int] = {}  # index -> index of the earlier mail of this batch it repeats
        replays: dict[int, list[TicketEvent]] = {}
        for index, item in enumerate(items):
            mail = item.mail
            keys = [(mail.account_id, "source:" + mail.source_id)]
            if mail.message_id:
                keys.append((mail.account_id, "message:" + mail.message_id))
            stored = next((recorded[k] for k in keys if k in recorded), None)
            first = next((earlier[k] for k in keys if k in earlier), None)
            if stored is not None:
                replays[index] = stored
            elif first is not None:
                copies[index] = first
            else:
                fresh.append(index)
                for key in keys:
                    earlier[key] = index

        fresh_items = [items[i] for i in fresh]
        self._lock_bundles(fresh_items)
        facts = self._facts(fresh_items)
        plans = plan_batch([item.mail for item in fresh_items], facts, self._settings.unknown_reference)
        applied = self._apply(fresh_items, plans, facts)

        events: dict[int, list[TicketEvent]] = dict(replays)
        ledger_rows = []
        for index, item, result in zip(fresh, fresh_items, applied):
            events[index] = events_for(item.mail, result, self._now)
            ledger_rows.append(self._ledger_row(item.mail, result, events[index]))
        if ledger_rows:
            # No ON CONFLICT: a replica that recorded one of these mails meanwhile makes
            # this fail, the batch is retried and then finds the mail recorded.
            copy_rows(self._c, ProcessedMail.__table__, ledger_rows)
        for index, first in copies.items():
            events[index] = events[first]
        written = set(fresh)
        return [HandledMail(item.mail, events[i], written=i in written) for i, item in enumerate(items)]

    # --- 1. the ledger -------------------------------------------------------

    def _recorded_events(self, items: Sequence[BatchItem]) -> dict[tuple[str, str], list[TicketEvent]]:
        """Events of the mails recorded before, keyed by (account, "source:"/"message:" id)."""
        sources = sorted({(i.mail.account_id, i.mail.source_id) for i in items})
        messages = sorted({(i.mail.account_id, i.mail.message_id) for i in items if i.mail.message_id})
        # Two look-ups, one per unique index, rather than one OR that no index serves.
        by_source = _pairs("sources", sources, Text)
        rows = self._c.execute(
            select(ProcessedMail).join(
                by_source, and_(ProcessedMail.account_id == by_source.c.first, ProcessedMail.source_id == by_source.c.second)
            )
        ).all()
        if messages:
            by_message = _pairs("messages", messages, Text)
            rows += self._c.execute(
                select(ProcessedMail).join(
                    by_message,
                    and_(ProcessedMail.account_id == by_message.c.first, ProcessedMail.message_id == by_message.c.second),
                )
            ).all()
        found: dict[tuple[str, str], list[TicketEvent]] = {}
        for row in rows:
            events = _stored_events(row)
            found[(row.account_id, "source:" + row.source_id)] = events
            if row.message_id:
                found[(row.account_id, "message:" + row.message_id)] = events
        return found

    def _ledger_row(self, mail: MailClassified, result: AppliedMail, events: list[TicketEvent]) -> dict:
        return {
            "account_id": mail.account_id,
            "source_id": mail.source_id,
            "message_id": mail.message_id,
            "outcome": result.kind.value,
            "ticket_number": result.ticket_number,
            "subject": result.subject,
            "reason": result.reason,
            "events": [event.model_dump(mode="json") for event in events],
            "raw_sha256": mail.raw_sha256,
            "poll_cycle": mail.poll_cycle,
            "bundle_key": mail.bundle_key,
        }

    # --- 2. locks and facts --------------------------------------------------

    def _lock_bundles(self, items: Sequence[BatchItem]) -> None:
        keys = sorted({bundle_lock_key(i.mail.bundle_key) for i in items if _may_bundle(i.mail) and i.mail.bundle_key})
        lock_in_order(self._c, BUNDLE_LOCK_NAMESPACE, keys)

    def _facts(self, items: Sequence[BatchItem]) -> BatchFacts:
        mails = [i.mail for i in items]
        referenced = {
            n
            for m in mails
            if m.decision is Decision.FOLLOW_UP and (n := reference_number(m.ticket_reference or "")) is not None
        }
        by_message_id = self._tickets_of_bounced_mails(mails)
        referenced |= set(by_message_id.values())
        hints = {i.bundle_hint for i in items if _may_bundle(i.mail) and i.bundle_hint is not None}
        tickets = self._tickets(select_where=in_array(Ticket.number, sorted(referenced | hints), BigInteger)) if referenced | hints else {}
        # A hint from the window table is used only if PostgreSQL agrees; otherwise, and
        # on every miss, the ticket is looked up by bundle key and opening cycle.
        lookups = set()
        for item in items:
            mail = item.mail
            if not (_may_bundle(mail) and mail.bundle_key):
                continue
            hinted = tickets.get(item.bundle_hint) if item.bundle_hint is not None else None
            if hinted is None or hinted.bundle_key != mail.bundle_key or hinted.opening_poll_cycle not in bundle_window(mail.poll_cycle):
                lookups.add((mail.bundle_key, mail.poll_cycle))
        if lookups:
            pairs = _pairs("bundles", sorted(lookups), BigInteger)
            earliest, latest = bundle_window(pairs.c.second)
            tickets.update(
                self._tickets(
                    join=(
                        pairs,
                        and_(Ticket.bundle_key == pairs.c.first, Ticket.opening_poll_cycle.between(earliest, latest)),
                    )
                )
            )

        senders = sorted({m.sender.lower() for m in mails if m.decision is not Decision.REJECT})
        fallback_logins = sorted({m.ticket_options.fallback_user for m in mails if m.ticket_options.fallback_user})
        domains = sorted(
            {
                domain
                for m in mails
                if m.ticket_options.create_location_from_domain and (domain := split_address(m.sender)[1])
            }
        )
        users_by_email = {}
        if senders:
            for row in self._c.execute(
                select(User.id, User.login, User.location_id, func.lower(User.email).label("email")).where(
                    in_array(func.lower(User.email), senders, Text)
                )
            ):
                users_by_email[row.email] = KnownUser(row.id, row.login, row.location_id)
        users_by_login = {}
        if fallback_logins:
            for row in self._c.execute(
                select(User.id, User.login, User.location_id).where(in_array(User.login, fallback_logins, Text))
            ):
                users_by_login[row.login] = KnownUser(row.id, row.login, row.location_id)
        locations = {}
        if domains:
            locations = dict(
                (row.domain, row.id)
                for row in self._c.execute(select(Location.id, Location.domain).where(in_array(Location.domain, domains, Text)))
            )
        return BatchFacts(tickets, users_by_email, users_by_login, locations, by_message_id)

    def _tickets_of_bounced_mails(self, mails: Sequence[MailClassified]) -> dict[str, int]:
        """The ticket of each mail the batch's bounces name: found in the outbox by its
        Message-ID, else read from the Message-ID itself when it has our format (an outbox
        row may be gone). Whether that ticket exists is up to the ticket query."""
        originals = sorted({m.bounce_original_message_id for m in mails if m.bounce and m.bounce_original_message_id})
        if not originals:
            return {}
        found = {
            row.message_id: row.ticket_number
            for row in self._c.execute(
                select(OutboundMail.message_id, OutboundMail.ticket_number).where(
                    in_array(OutboundMail.message_id, originals, Text), OutboundMail.ticket_number.is_not(None)
                )
            )
        }
        for original in originals:
            if original not in found:
                number = ticket_number_of_message_id(original, self._settings.instance_id)
                if number is not None:
                    found[original] = number
        return found

    def _tickets(self, *, select_where=None, join=None) -> dict[int, KnownTicket]:
        """Tickets by number, locked for this transaction (their steps are appended)."""
        query = select(Ticket.number, Ticket.subject, Ticket.status, Ticket.bundle_key, Ticket.opening_poll_cycle)
        if join is not None:
            query = query.join(*join)
        if select_where is not None:
            query = query.where(select_where)
        rows = self._c.execute(query.order_by(Ticket.number).with_for_update(of=Ticket)).all()
        return {r.number: KnownTicket(r.number, r.subject, r.status, r.bundle_key, r.opening_poll_cycle) for r in rows}

    # --- 4. effects ----------------------------------------------------------

    def _apply(self, items: Sequence[BatchItem], plans: Sequence[Plan], facts: BatchFacts) -> list[AppliedMail]:
        opening = [p for p in plans if isinstance(p, OpenTicket)]
        locations = self._locations([p.creates_location for p in opening if p.creates_location is not None])
        users = self._users([p.creates_user for p in opening if p.creates_user is not None], locations)

        numbers: dict[PlannedTicket, int] = {}
        if opening:
            drawn = sorted(
                self._c.scalars(select(TICKET_NUMBER_SEQUENCE.next_value()).select_from(func.generate_series(1, len(opening))))
            )
            numbers = {plan.ticket: number for plan, number in zip(opening, drawn)}
            copy_rows(
                self._c,
                Ticket.__table__,
                [
                    {
                        "number": numbers[p.ticket],
                        "reference": format_reference(self._settings.instance_id, numbers[p.ticket]),
                        "subject": p.fields.subject,
                        "requester": p.fields.requester,
                        "source_account_id": p.fields.source_account_id,
                        "category": p.fields.category,
                        "priority": p.fields.priority,
                        "resource": p.fields.resource,
                        "bundle_key": p.fields.bundle_key,
                        "opening_poll_cycle": p.fields.opening_poll_cycle,
                        "requester_user_id": _user_id(p.owner, users),
                        "location_id": _location_id(p.location, locations),
                    }
                    for p in opening
                ],
            )

        last_position = last_step_positions(self._c, list(facts.tickets))
        steps, reopened = [], set()
        results = []
        for item, plan in zip(items, plans):
            mail = item.mail
            flag = unattached_bounce_flag(mail)
            if isinstance(plan, Reject):
                reason = f"{plan.reason}; {flag}" if flag else plan.reason
                results.append(AppliedMail(TicketEventKind.MAIL_REJECTED, None, mail.subject, reason))
                continue
            if isinstance(plan, AttachNote):
                position = last_position.get(plan.ticket, 0) + 1
                last_position[plan.ticket] = position
                steps.append(_step_row(plan.ticket, position, mail, direction="note"))
                results.append(AppliedMail(TicketEventKind.STEP_ADDED, plan.ticket, plan.ticket_subject, plan.reason))
                continue
            number = numbers[plan.ticket] if isinstance(plan, OpenTicket) else _ticket_number(plan.ticket, numbers)
            position = last_position.get(number, 0) + 1
            last_position[number] = position
            steps.append(_step_row(number, position, mail))
            if isinstance(plan, OpenTicket):
                location_created = plan.creates_location is not None and locations[plan.creates_location.domain][1]
                created_login = users[plan.creates_user.email][1] if plan.creates_user is not None else None
                results.append(
                    AppliedMail(
                        TicketEventKind.TICKET_CREATED,
                        number,
                        plan.fields.subject,
                        flag,
                        created_user_login=created_login,
                        created_location_domain=plan.creates_location.domain if location_created else None,
                    )
                )
            else:
                if number in facts.tickets:
                    reopened.add(number)
                results.append(AppliedMail(TicketEventKind.STEP_ADDED, number, plan.ticket_subject, flag))
        if steps:
            copy_rows(self._c, TicketStep.__table__, steps)
        if reopened:
            self._c.execute(
                update(Ticket).where(in_array(Ticket.number, sorted(reopened), BigInteger)).values(status="open", updated_at=func.now())
            )
        self._queue_auto_answers(items, plans, numbers)
        return results

    def _locations(self, planned: Sequence[PlannedLocation]) -> dict[str, tuple[int, bool]]:
        """The locations of ``planned`` by domain: (id, True) if inserted now, (id, False)
        if found because another transaction inserted it first. Two statements at most,
        whatever the number of domains."""
        domains = sorted({p.domain for p in planned})
        if not domains:
            return {}
        # Unnested, as the users' INSERT is: one statement text whatever the number of domains.
        new_domains = unnested("new_locations", {"domain": (domains, Text)}, numbered=True)
        rows = select(new_domains.c.domain, new_domains.c.domain).order_by(new_domains.c.position)
        statement = (
            insert(Location)
            .from_select(["name", "domain"], rows)
            .on_conflict_do_nothing(index_elements=["domain"])
            .returning(Location.id, Location.domain)
        )
        locations = {row.domain: (row.id, True) for row in self._c.execute(statement)}
        if missing := [d for d in domains if d not in locations]:
            found = self._c.execute(select(Location.id, Location.domain).where(in_array(Location.domain, missing, Text)))
            locations.update((row.domain, (row.id, False)) for row in found)
        return locations

    def _users(
        self, planned: Sequence[PlannedUser], locations: dict[str, tuple[int, bool]]
    ) -> dict[str, tuple[int, str | None]]:
        """The users of ``planned`` by email: (id, login) if inserted now, (id, None) if found.

        One INSERT tries each user's base login (:func:`base_login`), which is the one
        most new senders get. A row it skipped had its email or its login taken (by
        another row of the batch or another transaction): the skipped rows' emails are
        looked up in one statement, and the rest get numbered logins claimed from the
        per-base counters (:meth:`_claim_numbered_logins`) and go in with one more
        INSERT. So a batch costs the same few statements however many of its senders
        share a local part (``info@`` from many domains), and no statement reads a
        base's existing logins. A numbered login taken meanwhile (a user added by hand)
        sends its row round again for a fresh number. The rows go in email order, so
        concurrent batches take the unique-index entries in one order.
        """
        if not planned:
            return {}
        ordered = sorted({p.email: p for p in planned}.values(), key=lambda p: p.email)
        users = self._insert_users(ordered, [base_login(p.local_part) for p in ordered], locations)
        missing = [p for p in ordered if p.email not in users]
        while missing:
            users |= self._users_by_email([p.email for p in missing])
            missing = [p for p in missing if p.email not in users]
            if missing:
                users |= self._insert_users(missing, self._claim_numbered_logins(missing), locations)
                missing = [p for p in missing if p.email not in users]
        return users

    def _insert_users(
        self, planned: Sequence[PlannedUser], logins: Sequence[str], locations: dict[str, tuple[int, bool]]
    ) -> dict[str, tuple[int, str | None]]:
        """Inserts ``planned`` with ``logins``; the rows inserted, by email. ``ON CONFLICT DO
        NOTHING`` waits for a concurrent transaction holding the same email or login and
        skips the row if that transaction commits."""
        # One INSERT ... SELECT from unnested array parameters: its text is the same for every
        # batch, where a multi-row VALUES list was new SQL of the batch's size that psycopg
        # converted on every execution (6 % of the ticketer when every mail was a new sender).
        columns: dict[str, tuple[Sequence[object], type]] = {
            "login": (logins, Text),
            "email": ([p.email for p in planned], Text),
            "display_name": ([p.display_name for p in planned], Text),
            "location_id": ([_location_id(p.location, locations) for p in planned], BigInteger),
            "created_from_account_id": ([p.account_id for p in planned], Text),
        }
        new_users = unnested("new_users", columns, numbered=True)
        names = list(columns)
        # In the order given (the caller's email order), as the VALUES list went in.
        rows = select(*(new_users.c[name] for name in names)).order_by(new_users.c.position)
        statement = (
            insert(User)
            .from_select(names, rows)
            .on_conflict_do_nothing()
            .returning(User.id, User.email, User.login)
        )
        return {row.email: (row.id, row.login) for row in self._c.execute(statement)}

    def _users_by_email(self, emails: Sequence[str]) -> dict[str, tuple[int, None]]:
        email = func.lower(User.email)
        rows = self._c.execute(select(User.id, email.label("email")).where(in_array(email, emails, Text)))
        return {row.email: (row.id, None) for row in rows}

    def _claim_numbered_logins(self, planned: Sequence[PlannedUser]) -> list[str]:
        """A numbered login for each of ``planned`` (in order), claimed from ``login_suffixes``.

        One statement raises each base's counter by the number of its users in the batch
        and returns the new values; a base seen for the first time starts at 1, so its
        first claim begins at 2. The row lock on each counter is held until the
        transaction ends, so concurrent batches never claim the same number; the bases
        are claimed in sorted order, so they take those locks in one order.
        """
        bases = [base_login(p.local_part) for p in planned]
        counts: dict[str, int] = {}
        for base in bases:
            counts[base] = counts.get(base, 0) + 1
        claims = _pairs("claims", sorted(counts.items()), Integer)
        statement = insert(LoginSuffix).from_select(
            ["base", "last_suffix"], select(claims.c.first, claims.c.second + 1).order_by(claims.c.first)
        )
        statement = statement.on_conflict_do_update(
            index_elements=[LoginSuffix.base],
            set_={"last_suffix": LoginSuffix.last_suffix + statement.excluded.last_suffix - 1},
        ).returning(LoginSuffix.base, LoginSuffix.last_suffix)
        numbered = {
            row.base: iter(numbered_logins(row.base, row.last_suffix, counts[row.base]))
            for row in self._c.execute(statement)
        }
        return [next(numbered[base]) for base in bases]

    def _queue_auto_answers(
        self, items: Sequence[BatchItem], plans: Sequence[Plan], numbers: dict[PlannedTicket, int]
    ) -> None:
        """The auto-answer of each new ticket, queued in this transaction (see auto_answer_outbox)."""
        from services.ticketer.auto_answer_outbox import queue_auto_answers

        openings = [
            (item.mail, numbers[plan.ticket]) for item, plan in zip(items, plans) if isinstance(plan, OpenTicket)
        ]
        if openings:
            queue_auto_answers(self._c, openings, self._settings)


def last_step_positions(connection: Connection, numbers: Sequence[int]) -> dict[int, int]:
    """The highest step position of each ticket of ``numbers`` that has steps, in one statement."""
    if not numbers:
        return {}
    rows = connection.execute(
        select(TicketStep.ticket_number, func.max(TicketStep.position))
        .where(in_array(TicketStep.ticket_number, numbers, BigInteger))
        .group_by(TicketStep.ticket_number)
    ).all()
    return {number: position for number, position in rows}


def bundle_lock_key(bundle_key: str) -> int:
    """The second key of a bundle's advisory lock: a stable 32-bit hash (CRC-32, signed),
    computed here so the batch sends integers, not its bundle keys, to lock them."""
    return zlib.crc32(bundle_key.encode("utf-8")) - 2**31


def _pairs(name: str, pairs: Sequence[tuple[str, object]], second_type: type) -> Any:
    """``pairs`` as a derived table with columns ``first`` (text) and ``second``."""
    return unnested(name, {"first": ([a for a, _ in pairs], Text), "second": ([b for _, b in pairs], second_type)})


def _may_bundle(mail: MailClassified) -> bool:
    return mail.decision is Decision.NEW_TICKET and mail.ticket_options.auto_bundle


def _ticket_number(ticket: int | PlannedTicket, numbers: dict[PlannedTicket, int]) -> int:
    return numbers[ticket] if isinstance(ticket, PlannedTicket) else ticket


def _user_id(owner: int | PlannedUser, users: dict[str, tuple[int, str | None]]) -> int:
    return users[owner.email][0] if isinstance(owner, PlannedUser) else owner


def _location_id(location: int | PlannedLocation | None, locations: dict[str, tuple[int, bool]]) -> int | None:
    if isinstance(location, PlannedLocation):
        return locations[location.domain][0]
    return location


def _step_row(number: int, position: int, mail: MailClassified, direction: str = "inbound") -> dict:
    return {
        "ticket_number": number,
        "position": position,
        "direction": direction,
        "account_id": mail.account_id,
        "source_id": mail.source_id,
        "message_id": mail.message_id,
        "sender": mail.sender,
        "subject": mail.subject,
        "body_text": mail.body_text,
    }


def _stored_events(row) -> list[TicketEvent]:
    """The events a ledger row recorded; rows from before revision 0005 keep only the outcome."""
    if row.events is not None:
        return [TicketEvent.model_validate(event) for event in row.events]
    kind = TicketEventKind(row.outcome)
    return [
        TicketEvent(
            event_id=event_id(row.account_id, row.source_id, kind),
            kind=kind,
            occurred_at=row.processed_at.replace(tzinfo=UTC),
            account_id=row.account_id,
            source_id=row.source_id,
            ticket_number=row.ticket_number,
            subject=row.subject,
            reason=row.reason,
        )
    ]

