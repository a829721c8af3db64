"""The ticketer's store on the real PostgreSQL: the rules' effects, the ledger, and races
between replicas (threads with their own connections stand in for them)."""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager

import pytest
from sqlalchemy import event, func, insert, select, update

from mailintake.contracts.records import Decision, TicketEventKind
from mailintake.database import engine_for
from mailintake.database.migrate import upgrade
from services.ticketer.auto_answer_outbox import import_templates
from services.ticketer.auto_answer_templates import TemplateText
from services.ticketer.settings import TicketerSettings, UnknownReferencePolicy
from services.ticketer.store import BatchItem, TicketStore
from services.ticketer.tables import (
    Category,
    Location,
    LoginSuffix,
    OutboundMail,
    Priority,
    ProcessedMail,
    Resource,
    Ticket,
    TicketStep,
    User,
)
from tests.database_schemas import migrated_schema
from tests.ticketer.mails import classified

pytestmark = pytest.mark.stack


@pytest.fixture
def engine(stack):
    return engine_for(stack.database_url)


@pytest.fixture
def store(engine):
    return TicketStore(engine, TicketerSettings())


def kinds(handled):
    return [[e.kind.value for e in h.events] for h in handled]


def tickets_of(engine, account_id):
    with engine.connect() as c:
        return c.execute(select(Ticket).where(Ticket.source_account_id == account_id).order_by(Ticket.number)).all()


def steps_of(engine, number):
    with engine.connect() as c:
        return c.execute(select(TicketStep).where(TicketStep.ticket_number == number).order_by(TicketStep.position)).all()


def ledger_of(engine, account_id):
    with engine.connect() as c:
        return {r.source_id: r for r in c.execute(select(ProcessedMail).where(ProcessedMail.account_id == account_id))}


def add_user(engine, login, email, location_id=None):
    with engine.begin() as c:
        return c.scalar(insert(User).values(login=login, email=email, location_id=location_id).returning(User.id))


def test_new_ticket_takes_the_accounts_reference_data_and_the_fallback_user(engine, store, unique):
    fallback_id = add_user(engine, f"fallback-{unique}", f"fallback-{unique}@desk.test")
    with engine.begin() as c:
        for table in (Resource, Category, Priority):
            c.execute(insert(table).values(name=f"{table.__tablename__}-{unique}"))
    account = f"acc-{unique}"
    mail = classified(
        account, "1", sender=f"stranger-{unique}@kunde.test", fallback_user=f"fallback-{unique}",
        resource=f"resources-{unique}", category=f"categories-{unique}", priority=f"priorities-{unique}",
    )
    [handled] = store.apply_batch([BatchItem(mail)])
    assert kinds([handled]) == [["TICKET_CREATED"]]
    [ticket] = tickets_of(engine, account)
    assert (ticket.resource, ticket.category, ticket.priority) == (
        f"resources-{unique}", f"categories-{unique}", f"priorities-{unique}",
    )
    assert ticket.requester_user_id == fallback_id and ticket.requester == mail.sender
    assert ticket.status == "open" and ticket.bundle_key == mail.bundle_key and ticket.opening_poll_cycle == 1
    assert [s.body_text for s in steps_of(engine, ticket.number)] == ["body of 1"]


def test_follow_up_appends_a_step_and_reopens_a_closed_ticket(engine, store, unique):
    account = f"acc-{unique}"
    options = dict(create_user_from_local_part=True)
    [opened] = store.apply_batch([BatchItem(classified(account, "1", sender=f"f-{unique}@kunde.test", **options))])
    number = opened.opened_ticket
    with engine.begin() as c:
        c.execute(update(Ticket).where(Ticket.number == number).values(status="closed"))
    follow_up = classified(
        account, "2", decision=Decision.FOLLOW_UP, reference=f"[#mi-{number}]", subject=f"Re: [#mi-{number}] x",
        sender=f"f-{unique}@kunde.test", **options
    )
    [handled] = store.apply_batch([BatchItem(follow_up)])
    assert [(e.kind, e.ticket_number) for e in handled.events] == [(TicketEventKind.STEP_ADDED, number)]
    assert [s.position for s in steps_of(engine, number)] == [1, 2]
    assert tickets_of(engine, account)[0].status == "open"


@pytest.mark.parametrize("policy", list(UnknownReferencePolicy))
def test_follow_up_to_a_missing_ticket_is_recorded_either_way(engine, unique, policy):
    store = TicketStore(engine, TicketerSettings(unknown_reference=policy))
    account = f"acc-{unique}"
    mail = classified(
        account, "1", decision=Decision.FOLLOW_UP, reference="[#mi-1]", sender=f"anna-{unique}@kunde.test",
        create_user_from_local_part=True,
    )
    [handled] = store.apply_batch([BatchItem(mail)])
    row = ledger_of(engine, account)["1"]
    if policy is UnknownReferencePolicy.REJECT:
        assert kinds([handled]) == [["MAIL_REJECTED"]] and tickets_of(engine, account) == []
        assert row.outcome == "MAIL_REJECTED" and row.reason == "reference [#mi-1] names no ticket of this installation"
    else:
        assert kinds([handled]) == [["USER_CREATED", "TICKET_CREATED"]] and len(tickets_of(engine, account)) == 1
        assert row.outcome == "TICKET_CREATED"


def test_rejected_mail_is_recorded_with_its_reason_and_stays_reachable(engine, store, unique):
    account = f"acc-{unique}"
    mail = classified(account, "pop3:00ab", decision=Decision.REJECT, reason="the account accepts follow-ups only")
    [handled] = store.apply_batch([BatchItem(mail)])
    [event] = handled.events
    assert (event.kind, event.reason, event.ticket_number) == (
        TicketEventKind.MAIL_REJECTED, "the account accepts follow-ups only", None,
    )
    row = ledger_of(engine, account)["pop3:00ab"]
    assert (row.outcome, row.reason, row.raw_sha256, row.message_id) == (
        "MAIL_REJECTED", "the account accepts follow-ups only", mail.raw_sha256, mail.message_id,
    )
    assert tickets_of(engine, account) == []


def test_unknown_sender_without_user_creation_or_fallback_is_rejected(engine, store, unique):
    account = f"acc-{unique}"
    [handled] = store.apply_batch([BatchItem(classified(account, "1", sender=f"x-{unique}@kunde.test"))])
    assert kinds([handled]) == [["MAIL_REJECTED"]]
    assert "neither creates users" in ledger_of(engine, account)["1"].reason


def test_users_from_the_local_part_resolve_collisions_in_a_fixed_order(engine, store, unique):
    name = f"max.mustermann.{unique}"
    add_user(engine, name, f"someone-else-{unique}@other.test")
    account = f"acc-{unique}"
    mails = [
        classified(account, str(i), sender=f"{name}@{domain}.test", create_user_from_local_part=True, sender_name="Max")
        for i, domain in enumerate(["a", "b", "a"])
    ]
    handled = store.apply_batch([BatchItem(m) for m in mails])
    assert kinds(handled) == [["USER_CREATED", "TICKET_CREATED"], ["USER_CREATED", "TICKET_CREATED"], ["STEP_ADDED"]]
    assert handled[0].events[0].reason == f"user {name}-2 created for {name}@a.test"
    with engine.connect() as c:
        users = dict(c.execute(select(User.email, User.login).where(User.login.like(f"{name}%"))).all())
        display = c.scalar(select(User.display_name).where(User.email == f"{name}@b.test"))
    assert users == {f"someone-else-{unique}@other.test": name, f"{name}@a.test": f"{name}-2", f"{name}@b.test": f"{name}-3"}
    assert display == "Max"


@contextmanager
def recorded_statements(engine):
    """The SQL statements ``engine`` sends meanwhile, in order."""
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def count_starting(statements, prefix):
    return sum(s.lstrip().upper().startswith(prefix) for s in statements)


def test_a_batch_of_new_senders_is_inserted_in_one_statement(engine, store, unique):
    taken = f"taken.{unique}"
    add_user(engine, taken, f"first-{unique}@other.test")
    account = f"acc-{unique}"
    senders = [f"new{i}.{unique}@kunde.test" for i in range(20)] + [f"{taken}@kunde.test"]
    mails = [classified(account, str(i), sender=s, create_user_from_local_part=True) for i, s in enumerate(senders)]
    with recorded_statements(engine) as statements:
        handled = store.apply_batch([BatchItem(m) for m in mails])
    assert kinds(handled) == [["USER_CREATED", "TICKET_CREATED"]] * 21
    # One INSERT for the 20 free logins, and one more for the sender whose login was taken.
    assert count_starting(statements, "INSERT INTO USERS") == 2
    with engine.connect() as c:
        logins = dict(c.execute(select(User.email, User.login).where(User.email.in_(senders))).all())
    assert logins == {s: s.split("@")[0] for s in senders[:20]} | {f"{taken}@kunde.test": f"{taken}-2"}


def test_new_senders_and_domains_go_in_by_the_same_statements_whatever_the_batch_size(engine, store, unique):
    account = f"acc-{unique}"
    inserts = []
    for size, domain_count in ((3, 2), (20, 5)):
        domains = [f"kunde{size}x{d}-{unique}.test" for d in range(domain_count)]
        senders = [f"n{size}x{i}.{unique}@{domains[i % domain_count]}" for i in range(size)]
        mails = [
            classified(account, f"{size}-{i}", sender=s, sender_name=f"Kunde {i}" if i % 2 else None,
                       create_user_from_local_part=True, create_location_from_domain=True)
            for i, s in enumerate(senders)
        ]
        with recorded_statements(engine) as statements:
            handled = store.apply_batch([BatchItem(m) for m in mails])
        assert [k for k in kinds(handled) if "USER_CREATED" not in k] == []
        inserts.append([s for s in statements if s.lstrip().upper().startswith(("INSERT INTO USERS", "INSERT INTO LOCATIONS"))])
        with engine.connect() as c:
            location_ids = dict(c.execute(select(Location.domain, Location.id).where(Location.domain.in_(domains))).all())
            rows = c.execute(select(User.email, User.login, User.display_name, User.location_id, User.created_from_account_id)
                             .where(User.email.in_(senders))).all()
        assert sorted(location_ids) == sorted(domains)
        assert sorted(rows) == sorted(
            (s, s.split("@")[0], f"Kunde {i}" if i % 2 else None, location_ids[s.split("@")[1]], account)
            for i, s in enumerate(senders)
        )
    # A multi-row VALUES list was new SQL for every batch size, converted by psycopg each time.
    assert len(inserts[0]) == len(inserts[1]) == 2
    assert inserts[0] == inserts[1]


def test_follow_ups_go_in_by_the_same_statements_whatever_the_batch_size(engine, store, unique):
    account = f"acc-{unique}"
    sent = []
    for size in (3, 12):
        senders = [f"f{size}x{i}-{unique}@kunde.test" for i in range(size)]
        opened = store.apply_batch([
            BatchItem(classified(account, f"{size}-{i}", sender=s, subject=f"Case {size}/{i}", create_user_from_local_part=True))
            for i, s in enumerate(senders)
        ])
        numbers = [h.opened_ticket for h in opened]
        follow_ups = [
            classified(account, f"{size}-{i}-re", decision=Decision.FOLLOW_UP, reference=f"[#mi-{number}]",
                       subject=f"Re: [#mi-{number}] Case {size}/{i}", sender=s, create_user_from_local_part=True)
            for i, (s, number) in enumerate(zip(senders, numbers))
        ]
        with recorded_statements(engine) as statements:
            handled = store.apply_batch([BatchItem(m) for m in follow_ups])
        assert [(h.events[-1].kind, h.events[-1].ticket_number) for h in handled] == [
            (TicketEventKind.STEP_ADDED, number) for number in numbers
        ]
        sent.append(statements)
    assert sent[0] == sent[1]


def test_senders_sharing_a_local_part_cost_the_same_statements_however_many(engine, store, unique):
    info, support = f"info.{unique}", f"support.{unique}"
    add_user(engine, info, f"{info}@own.test")
    account = f"acc-{unique}"
    senders = [f"{info}@kunde{i:02}.test" for i in range(30)] + [f"{support}@kunde{i:02}.test" for i in range(10)]
    mails = [classified(account, str(i), sender=s, create_user_from_local_part=True) for i, s in enumerate(senders)]
    with recorded_statements(engine) as statements:
        handled = store.apply_batch([BatchItem(m) for m in mails])
    assert kinds(handled) == [["USER_CREATED", "TICKET_CREATED"]] * 40
    # The base logins; the skipped rows' emails looked up; one claim of numbers for both
    # bases; the numbered logins. None of it per sender, and no read of a base's logins.
    assert count_starting(statements, "INSERT INTO USERS") == 2
    assert count_starting(statements, "INSERT INTO LOGIN_SUFFIXES") == 1
    assert sum("FROM USERS" in s.upper() and "LOGIN" in s.upper().split("WHERE")[-1] for s in statements) == 0
    with engine.connect() as c:
        logins = dict(c.execute(select(User.email, User.login).where(User.email.in_(senders))).all())
    assert logins == (
        {f"{info}@kunde{i:02}.test": f"{info}-{i + 2}" for i in range(30)}
        | {f"{support}@kunde00.test": support}
        | {f"{support}@kunde{i:02}.test": f"{support}-{i + 1}" for i in range(1, 10)}
    )

    # The next batch goes on from the counter; a numbered login added by hand meanwhile
    # is skipped, and its sender gets the next number.
    add_user(engine, f"{info}-33", f"by-hand-{unique}@own.test")
    later = [f"{info}@kunde{i}.test" for i in (30, 31)]
    store.apply_batch([BatchItem(classified(account, f"later-{i}", sender=s, create_user_from_local_part=True))
                       for i, s in enumerate(later)])
    with engine.connect() as c:
        logins = dict(c.execute(select(User.email, User.login).where(User.email.in_(later))).all())
    assert logins == {later[0]: f"{info}-32", later[1]: f"{info}-34"}


def test_numbering_goes_on_from_the_logins_stored_before_the_counters(stack, unique):
    with migrated_schema(stack.database_url, "logins", revision="0012") as url:
        engine = engine_for(url)
        for login in ("info", "info-2", "info-17", "info-desk", "info-desk-3", "big-1234567890", "-5"):
            add_user(engine, login, f"{login}@old.test")
        upgrade(url, "0013")
        with engine.connect() as c:
            assert dict(c.execute(select(LoginSuffix.base, LoginSuffix.last_suffix)).all()) == {"info": 17, "info-desk": 3}
        senders = ["info@new.test", "info-desk@new.test", "big@new.test"]
        TicketStore(engine, TicketerSettings()).apply_batch(
            [BatchItem(classified("acc", str(i), sender=s, create_user_from_local_part=True)) for i, s in enumerate(senders)]
        )
        with engine.connect() as c:
            logins = dict(c.execute(select(User.email, User.login).where(User.email.in_(senders))).all())
        assert logins == {"info@new.test": "info-18", "info-desk@new.test": "info-desk-4", "big@new.test": "big"}


def test_a_batch_queues_its_auto_answers_in_the_same_statements_however_many(engine, unique):
    template = f"ack-{unique}"
    with engine.begin() as c:
        import_templates(c, [TemplateText(template, "Ticket {{ reference }}", "Thanks, {{ requester }}.")])
    store = TicketStore(engine, TicketerSettings(auto_answers_enabled=True, auto_answer_max_per_recipient=3))
    account = f"acc-{unique}"
    options = dict(create_user_from_local_part=True, auto_answer_template=template)

    def batch(name, customers):
        # Each customer one mail, one more customer five (each its own subject), and a
        # second mail of the first customer that bundles with its first.
        mails = [
            classified(account, f"{name}-{i}", sender=f"{name}{i}-{unique}@kunde.test", auto_bundle=True, **options)
            for i in range(customers)
        ]
        mails += [classified(account, f"{name}-many-{i}", sender=f"{name}-many-{unique}@kunde.test",
                             subject=f"Order {i}", **options) for i in range(5)]
        mails.append(classified(account, f"{name}-0-again", sender=f"{name}0-{unique}@kunde.test", auto_bundle=True,
                                **options))
        return mails

    small, large = batch("small", 2), batch("large", 30)
    with recorded_statements(engine) as small_statements:
        store.apply_batch([BatchItem(m) for m in small])
    with recorded_statements(engine) as statements:
        handled = store.apply_batch([BatchItem(m) for m in large])
    assert [h.events[-1].kind for h in handled] == [TicketEventKind.TICKET_CREATED] * 35 + [TicketEventKind.STEP_ADDED]
    # Tickets, templates, locks, counts in the window, dedupe keys, positions: one
    # statement each (the rows go in by COPY), for 5 answered mails as for 33; and each
    # with the same text, so psycopg converts none of them afresh for a new batch size.
    assert len(statements) == len(small_statements)
    assert statements == small_statements
    assert sum("HASHTEXT(" in s.upper() for s in statements) == 1  # the recipients' locks
    with engine.connect() as c:
        answers = c.execute(
            select(OutboundMail.recipient, OutboundMail.ticket_number)
            .where(OutboundMail.account_id == account, OutboundMail.recipient.like("large%"))
        ).all()
    recipients = Counter(recipient for recipient, _ in answers)
    # The cap of three counts the answers planned earlier in the same batch.
    expected = {f"large{i}-{unique}@kunde.test": 1 for i in range(30)} | {f"large-many-{unique}@kunde.test": 3}
    assert recipients == Counter(expected)
    first_ticket = handled[0].opened_ticket
    assert [(s.position, s.direction) for s in steps_of(engine, first_ticket)] == [
        (1, "inbound"), (2, "inbound"), (3, "outbound")
    ]
    # A replay queues nothing again.
    again = store.apply_batch([BatchItem(m) for m in large])
    assert not any(h.written for h in again)
    with engine.connect() as c:
        queued = c.scalar(select(func.count()).select_from(OutboundMail).where(OutboundMail.account_id == account))
    assert queued == 5 + 33


def test_known_sender_is_found_whatever_the_case(engine, store, unique):
    user_id = add_user(engine, f"erika-{unique}", f"Erika.{unique}@Kunde.test")
    account = f"acc-{unique}"
    [handled] = store.apply_batch(
        [BatchItem(classified(account, "1", sender=f"ERIKA.{unique}@kunde.TEST", create_user_from_local_part=True))]
    )
    assert kinds([handled]) == [["TICKET_CREATED"]]
    assert tickets_of(engine, account)[0].requester_user_id == user_id


def test_the_domain_becomes_one_location_that_users_get(engine, store, unique):
    domain = f"kunde-{unique}.test"
    account = f"acc-{unique}"
    options = dict(create_user_from_local_part=True, create_location_from_domain=True)
    first = store.apply_batch([BatchItem(classified(account, "1", sender=f"a@{domain}", **options))])
    second = store.apply_batch([BatchItem(classified(account, "2", sender=f"b@{domain}", **options))])
    assert kinds(first + second) == [
        ["LOCATION_CREATED", "USER_CREATED", "TICKET_CREATED"],
        ["USER_CREATED", "TICKET_CREATED"],
    ]
    with engine.connect() as c:
        location_id = c.scalar(select(Location.id).where(Location.domain == domain))
        user_locations = c.scalars(select(User.location_id).where(User.email.in_([f"a@{domain}", f"b@{domain}"]))).all()
    assert user_locations == [location_id, location_id]
    assert {t.location_id for t in tickets_of(engine, account)} == {location_id}


def test_a_replay_writes_nothing_and_returns_the_same_events(engine, store, unique):
    account = f"acc-{unique}"
    mails = [classified(account, str(i), sender=f"r-{unique}@kunde.test", poll_cycle=i, create_user_from_local_part=True) for i in range(4)]
    first = store.apply_batch([BatchItem(m) for m in mails])
    again = store.apply_batch([BatchItem(m) for m in mails])
    assert [h.written for h in first] == [True] * 4 and [h.written for h in again] == [False] * 4
    assert [h.events for h in again] == [h.events for h in first]
    assert len(tickets_of(engine, account)) == 2  # cycles 0,1 and 2,3


def test_the_same_message_id_under_a_new_source_id_is_a_replay(engine, store, unique):
    account = f"acc-{unique}"
    original = classified(account, "imap:1:5", message_id=f"<{unique}@x>", fallback_user="nobody")
    refetched = classified(account, "imap:2:5", message_id=f"<{unique}@x>", fallback_user="nobody")
    [first] = store.apply_batch([BatchItem(original)])
    [again] = store.apply_batch([BatchItem(refetched)])
    assert not again.written and again.events == first.events
    assert [e.kind for e in first.events] == [TicketEventKind.MAIL_REJECTED]
    assert list(ledger_of(engine, account)) == ["imap:1:5"]


def test_a_mail_twice_in_one_batch_is_handled_once(engine, store, unique):
    account = f"acc-{unique}"
    mail = classified(account, "1", sender=f"d-{unique}@kunde.test", create_user_from_local_part=True, auto_bundle=False)
    one, two = store.apply_batch([BatchItem(mail), BatchItem(mail)])
    assert (one.written, two.written) == (True, False) and one.events == two.events
    assert len(tickets_of(engine, account)) == 1


def test_a_wrong_hint_from_the_window_table_is_checked_against_postgresql(engine, store, unique):
    account = f"acc-{unique}"
    options = dict(create_user_from_local_part=True, sender=f"h-{unique}@kunde.test")
    [other] = store.apply_batch([BatchItem(classified(account, "1", subject="Other", **options))])
    [opened] = store.apply_batch([BatchItem(classified(account, "2", subject="Printer", poll_cycle=5, **options))])
    # A hint naming a ticket of another bundle is ignored; the look-up finds the right one.
    [bundled] = store.apply_batch([BatchItem(classified(account, "3", subject="Printer", poll_cycle=6, **options), other.opened_ticket)])
    assert [(e.kind, e.ticket_number) for e in bundled.events] == [(TicketEventKind.STEP_ADDED, opened.opened_ticket)]
    # A miss (no hint at all: the table lost its changelog) finds it too.
    [missed] = store.apply_batch([BatchItem(classified(account, "4", subject="Printer", poll_cycle=6, **options))])
    assert [(e.kind, e.ticket_number) for e in missed.events] == [(TicketEventKind.STEP_ADDED, opened.opened_ticket)]


# --- races between replicas ----------------------------------------------------


def race(functions):
    """Run ``functions`` at once on threads, each after all are ready; return their results."""
    barrier = threading.Barrier(len(functions))
    results: list = [None] * len(functions)
    errors: list = []

    def run(index, function):
        barrier.wait()
        try:
            results[index] = function()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, f)) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def test_two_replicas_creating_the_same_user_end_with_one_user_and_one_event(engine, unique):
    for round_ in range(5):
        sender = f"race-{round_}-{unique}@kunde-{unique}.test"
        replicas = [TicketStore(engine, TicketerSettings()) for _ in range(4)]
        results = race(
            [
                lambda store=store, i=i: store.apply_batch(
                    [BatchItem(classified(f"acc-{unique}", f"{round_}-{i}", sender=sender, subject=f"s{i}",
                                          create_user_from_local_part=True, create_location_from_domain=True))]
                )
                for i, store in enumerate(replicas)
            ]
        )
        events = Counter(e.kind for [handled] in results for e in handled.events)
        assert events[TicketEventKind.USER_CREATED] == 1, events
        assert events[TicketEventKind.TICKET_CREATED] == 4
        with engine.connect() as c:
            assert c.scalar(select(func.count()).select_from(User).where(func.lower(User.email) == sender)) == 1
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(Location).where(Location.domain == f"kunde-{unique}.test")) == 1


def test_replicas_creating_users_of_one_base_get_numbers_without_gaps(engine, unique):
    base = f"race.{unique}"
    replicas = [TicketStore(engine, TicketerSettings()) for _ in range(4)]
    senders = [[f"{base}@r{r}-d{d}.test" for d in range(10)] for r in range(4)]
    race(
        [
            lambda store=store, r=r: store.apply_batch(
                [BatchItem(classified(f"acc-{unique}", f"{r}-{d}", sender=s, create_user_from_local_part=True))
                 for d, s in enumerate(senders[r])]
            )
            for r, store in enumerate(replicas)
        ]
    )
    with engine.connect() as c:
        logins = c.scalars(select(User.login).where(User.email.in_([s for group in senders for s in group]))).all()
        counter = c.scalar(select(LoginSuffix.last_suffix).where(LoginSuffix.base == base))
    assert sorted(logins) == sorted([base] + [f"{base}-{n}" for n in range(2, 41)])
    assert counter == 40


def test_replicas_answering_one_sender_at_once_stay_within_the_cap(engine, unique):
    template = f"ack-race-{unique}"
    with engine.begin() as c:
        import_templates(c, [TemplateText(template, "Ticket {{ reference }}", "Thanks.")])
    settings = TicketerSettings(auto_answers_enabled=True, auto_answer_max_per_recipient=3)
    replicas = [TicketStore(engine, settings) for _ in range(4)]
    account, sender = f"acc-{unique}", f"pingpong-{unique}@kunde.test"
    race(
        [
            lambda store=store, r=r: store.apply_batch(
                [BatchItem(classified(account, f"{r}-{i}", sender=sender, subject=f"Reply {r}-{i}",
                                      create_user_from_local_part=True, auto_answer_template=template))
                 for i in range(3)]
            )
            for r, store in enumerate(replicas)
        ]
    )
    with engine.connect() as c:
        assert c.scalar(select(func.count()).select_from(Ticket).where(Ticket.source_account_id == account)) == 12
        assert c.scalar(select(func.count()).select_from(OutboundMail).where(OutboundMail.recipient == sender)) == 3


def test_two_replicas_handling_the_same_bundle_open_one_ticket(engine, unique):
    # A rebalance can hand a partition to a new owner while the old one still works on
    # it: both apply the same mails, in the same order.
    account = f"acc-{unique}"
    for round_ in range(5):
        mails = [
            classified(account, f"{round_}-{i}", sender=f"b-{unique}@kunde.test", subject=f"round {round_}",
                       poll_cycle=[10, 10, 11][i], create_user_from_local_part=True)
            for i in range(3)
        ]
        replicas = [TicketStore(engine, TicketerSettings()) for _ in range(2)]
        results = race([lambda store=store: [store.apply_batch([BatchItem(m)])[0] for m in mails] for store in replicas])
        assert [h.events for h in results[0]] == [h.events for h in results[1]]
        assert sum(h.written for r in results for h in r) == 3
    tickets = tickets_of(engine, account)
    assert len(tickets) == 5
    assert all([s.position for s in steps_of(engine, t.number)] == [1, 2, 3] for t in tickets)


def bounce_of(mail, original):
    return mail.model_copy(update={"bounce": True, "bounce_original_message_id": original, "bounce_status": "5.1.1"})


def test_a_bounce_of_our_mail_is_a_note_on_its_ticket_and_reopens_nothing(engine, store, unique):
    account = f"acc-{unique}"
    [opened] = store.apply_batch([BatchItem(classified(account, "1", sender=f"b-{unique}@kunde.test", create_user_from_local_part=True))])
    number = opened.opened_ticket
    with engine.begin() as c:
        c.execute(update(Ticket).where(Ticket.number == number).values(status="closed"))
    # A mail of ours whose Message-ID has our format: found without an outbox row.
    ours = f"<mi-{number}.6f1c0e7a9b2d4c35a1e8f0d2c4b6a890@desk.test>"
    rejected = bounce_of(classified(account, "2", sender=f"mailer-daemon@{unique}.test", decision=Decision.REJECT), ours)
    stranger = bounce_of(classified(account, "3", sender=f"mailer-daemon@{unique}.test", decision=Decision.REJECT), "<x@else.test>")
    handled = store.apply_batch([BatchItem(rejected), BatchItem(stranger)])
    assert [(e.kind, e.ticket_number) for e in handled[0].events] == [(TicketEventKind.STEP_ADDED, number)]
    steps = steps_of(engine, number)
    assert [(s.position, s.direction, s.source_id) for s in steps] == [(1, "inbound", "1"), (2, "note", "2")]
    assert tickets_of(engine, account)[0].status == "closed"
    ledger = ledger_of(engine, account)
    assert ledger["2"].outcome == "STEP_ADDED" and ledger["2"].reason == f"bounce (5.1.1) of {ours} attached as a note"
    assert ledger["3"].outcome == "MAIL_REJECTED"
    assert ledger["3"].reason.endswith("bounce (5.1.1) of <x@else.test>: no ticket of ours sent that mail, so it is handled as decided")
