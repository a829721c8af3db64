"""kill -9 the ticketer at random points while 2,000 mails flow; afterwards every mail is
exactly one step (or one rejection), and no ticket, user or location exists twice."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from mailintake.contracts.records import Decision
from mailintake.database import engine_for
from services.ticketer.core import BatchFacts, OpenTicket, plan_batch
from services.ticketer.settings import UnknownReferencePolicy
from services.ticketer.tables import Location, ProcessedMail, Ticket, TicketStep, User
from tests.ticketer.mails import classified
from tests.ticketer.running_ticketer import (
    Producer,
    RunningTicketer,
    delete_group_and_topics,
    handled_count,
    place_group_at_end,
)

pytestmark = pytest.mark.stack

MAILS = 2000
KILLS = 10


def flowing_mails(account: str, unique: str) -> list:
    rng = random.Random(unique)
    options = dict(create_user_from_local_part=True, create_location_from_domain=True)
    mails = []
    for i in range(MAILS):
        domain = f"d{rng.randrange(8)}-{unique}.test"
        sender = f"user{rng.randrange(40)}@{domain}"
        if rng.random() < 0.05:
            mails.append(classified(account, f"m{i}", sender=sender, decision=Decision.REJECT, reason="test reject"))
            continue
        subject = f"subject {rng.randrange(3)}"
        mails.append(classified(account, f"m{i}", sender=sender, subject=subject, poll_cycle=i // 50, **options))
    return mails


def test_kill_9_at_random_points_loses_and_duplicates_nothing(stack, unique, tmp_path):
    account = f"crash-{unique}"
    mails = flowing_mails(account, unique)
    group = f"crash-ticketer-{unique}"
    place_group_at_end(stack.kafka_bootstrap, group)
    ticketer = RunningTicketer(stack, group, tmp_path / "ticketer.log")
    producer = Producer(stack.kafka_bootstrap)
    rng = random.Random(f"kills-{unique}")

    def produce_steadily():
        # ~2,000 mails over ~80 s, in bursts: every restart finds mails to work on.
        for start in range(0, MAILS, 25):
            producer.send(mails[start : start + 25])
            time.sleep(1.0)

    flow = threading.Thread(target=produce_steadily, daemon=True)
    started = time.monotonic()
    try:
        ticketer.start(wait_ready=False)
        flow.start()
        kills = 0
        while kills < KILLS:
            # Every second kill comes as soon as a batch has reached PostgreSQL, often before
            # its offsets are committed, so that the restart replays it: left to chance alone,
            # a ticketer that commits quickly can dodge every kill.
            right_after_a_batch = kills % 2 == 0
            before = handled_count(stack.database_url, account)
            deadline = time.monotonic() + 30
            while handled_count(stack.database_url, account) == before and time.monotonic() < deadline:
                time.sleep(0.005 if right_after_a_batch else 0.05)
            if not right_after_a_batch:
                time.sleep(rng.uniform(0.0, 1.5))  # somewhere inside the processing
            ticketer.kill()
            kills += 1
            ticketer.start(wait_ready=False)
        flow.join(120)
        # Wait for this ticketer itself: another group's ticketer on the shared topic may
        # complete the ledger first, and stopping then would cut this one's work short.
        ticketer.wait_handled(account, MAILS, timeout=120)
        # The last restart may still be importing (the mails were all handled before the
        # kill); a SIGTERM before the process installed its handler ends it at once.
        ticketer.wait_ready()
        assert ticketer.stop() == 0, ticketer.log_tail()
    finally:
        producer.close()
        ticketer.close()
        delete_group_and_topics(stack.kafka_bootstrap, group)
    handled_lines = [
        line for line in (tmp_path / "ticketer.log").read_text(errors="replace").splitlines()
        if '"mail.handled"' in line and f'"account_id": "{account}"' in line
    ]
    replays = sum('"replay": true' in line for line in handled_lines)
    print(f"{KILLS} kills, {MAILS} mails, {len(handled_lines)} handlings ({replays} replays), {time.monotonic() - started:.0f}s")
    # This group's ticketer saw every mail (another group's may have written some first),
    # and the kills cut work short: mails were handled again after a restart.
    missing = {m.source_id for m in mails} - set(ticketer.handled(account))
    assert not missing, f"never handled by this ticketer: {sorted(missing)[:20]}, in the ledger: {handled_count(stack.database_url, account)}"
    assert replays > 0

    plans = plan_batch(mails, BatchFacts(), UnknownReferencePolicy.NEW_TICKET)
    expected_tickets = sum(isinstance(p, OpenTicket) for p in plans)
    kept = [m for m in mails if m.decision is not Decision.REJECT]
    engine = engine_for(stack.database_url)
    with engine.connect() as c:
        ledger = c.execute(select(ProcessedMail.source_id, ProcessedMail.outcome).where(ProcessedMail.account_id == account)).all()
        steps = c.execute(
            select(TicketStep.source_id, TicketStep.ticket_number, TicketStep.position).where(TicketStep.account_id == account)
        ).all()
        tickets = c.scalar(select(func.count()).select_from(Ticket).where(Ticket.source_account_id == account))
        users = c.execute(
            select(func.lower(User.email), func.count()).where(User.email.like(f"%-{unique}.test")).group_by(func.lower(User.email))
        ).all()
        locations = c.execute(
            select(Location.domain, func.count()).where(Location.domain.like(f"%-{unique}.test")).group_by(Location.domain)
        ).all()

    assert len(ledger) == MAILS and len({s for s, _ in ledger}) == MAILS
    assert Counter(outcome for _, outcome in ledger)["MAIL_REJECTED"] == MAILS - len(kept)
    step_counts = Counter(source for source, _, _ in steps)
    assert set(step_counts) == {m.source_id for m in kept}, "a mail that should be a step is not"
    assert max(step_counts.values()) == 1, "a mail became two steps"
    assert tickets == expected_tickets, "tickets opened twice (or bundles missed)"
    by_ticket: dict[int, list[int]] = {}
    for _, number, position in steps:
        by_ticket.setdefault(number, []).append(position)
    assert all(sorted(p) == list(range(1, len(p) + 1)) for p in by_ticket.values())
    assert {email for email, _ in users} == {m.sender for m in kept} and {n for _, n in users} == {1}
    assert {domain for domain, _ in locations} == {m.sender.split("@")[1] for m in kept} and {n for _, n in locations} == {1}
