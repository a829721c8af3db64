"""PostgreSQL and Kafka restarted while the ticketer works: afterwards every mail is exactly
one step or rejection, and no ticket, user or location exists twice.

These restart servers of the shared local stack, which disturbs whatever else runs on it
for some seconds; the ``stack_restart`` mark makes them run after every other test.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from mailintake.contracts.records import Decision
from mailintake.database import engine_for
from services.ticketer.core import BatchFacts, OpenTicket, plan_batch
from services.ticketer.settings import UnknownReferencePolicy
from services.ticketer.tables import ProcessedMail, Ticket, TicketStep, User
from tests.stack_faults import restart
from tests.ticketer.mails import classified
from tests.ticketer.running_ticketer import (
    Producer,
    RunningTicketer,
    delete_group_and_topics,
    handled_count,
    place_group_at_end,
)

pytestmark = [pytest.mark.stack, pytest.mark.stack_restart]

MAILS = 600


class Supervised:
    """Restarts the ticketer whenever it exits, as the orchestrator would."""

    def __init__(self, ticketer: RunningTicketer) -> None:
        self.ticketer = ticketer
        self.exits: list[int] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Supervised:
        self.ticketer.start(wait_ready=False)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._done.is_set():
            process = self.ticketer.process
            if process is not None and process.poll() is not None:
                self.exits.append(process.returncode)
                time.sleep(1.0)
                if not self._done.is_set():
                    self.ticketer.start(wait_ready=False)
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(10)


def test_postgresql_and_kafka_restarts_lose_and_duplicate_nothing(stack, unique, tmp_path):
    account = f"restart-{unique}"
    options = dict(create_user_from_local_part=True, create_location_from_domain=True)
    mails = [
        classified(account, f"m{i}", decision=Decision.REJECT, reason="test reject")
        if i % 25 == 0
        else classified(account, f"m{i}", sender=f"u{i % 30}@d{i % 5}-{unique}.test", subject=f"s{i % 2}", poll_cycle=i // 40, **options)
        for i in range(MAILS)
    ]
    group = f"restart-ticketer-{unique}"
    place_group_at_end(stack.kafka_bootstrap, group)
    ticketer = RunningTicketer(stack, group, tmp_path / "ticketer.log")
    away = {}

    def produce_steadily():
        # Sends are retried until acknowledged: Kafka restarts under the producer too. A
        # retried send may duplicate a record, which the ledger must absorb as well.
        producer = Producer(stack.kafka_bootstrap)
        try:
            for start in range(0, MAILS, 20):
                for attempt in range(30):
                    try:
                        producer.send(mails[start : start + 20])
                        break
                    except Exception:  # noqa: BLE001 - Kafka is down for a while on purpose
                        time.sleep(1.0)
                time.sleep(0.5)
        finally:
            producer.close()

    flow = threading.Thread(target=produce_steadily, daemon=True)
    with Supervised(ticketer) as supervised:
        flow.start()
        while handled_count(stack.database_url, account) < MAILS // 5:
            time.sleep(0.1)
        away["postgres"] = restart("postgres")
        while handled_count(stack.database_url, account) < MAILS // 2:
            time.sleep(0.1)
        away["kafka"] = restart("kafka")
        flow.join(180)
        deadline = time.monotonic() + 180
        while handled_count(stack.database_url, account) < MAILS and time.monotonic() < deadline:
            time.sleep(0.5)
    print(f"servers away: { {k: round(v, 1) for k, v in away.items()} }, ticketer exits: {supervised.exits}")
    try:
        # A restart by the supervisor near the end may still be importing: no SIGTERM handler yet.
        ticketer.wait_ready()
        assert ticketer.stop() == 0, ticketer.log_tail()
    finally:
        ticketer.close()
        delete_group_and_topics(stack.kafka_bootstrap, group)

    kept = [m for m in mails if m.decision is not Decision.REJECT]
    expected_tickets = sum(isinstance(p, OpenTicket) for p in plan_batch(mails, BatchFacts(), UnknownReferencePolicy.NEW_TICKET))
    with engine_for(stack.database_url).connect() as c:
        ledger = c.scalars(select(ProcessedMail.source_id).where(ProcessedMail.account_id == account)).all()
        steps = Counter(c.scalars(select(TicketStep.source_id).where(TicketStep.account_id == account)).all())
        tickets = c.scalar(select(func.count()).select_from(Ticket).where(Ticket.source_account_id == account))
        users = c.execute(
            select(func.lower(User.email), func.count()).where(User.email.like(f"%-{unique}.test")).group_by(func.lower(User.email))
        ).all()
    assert sorted(ledger) == sorted(m.source_id for m in mails)
    assert set(steps) == {m.source_id for m in kept} and max(steps.values()) == 1
    assert tickets == expected_tickets
    assert {email for email, _ in users} == {m.sender for m in kept} and {n for _, n in users} == {1}
