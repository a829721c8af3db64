"""How sender replicas share the outbox: SKIP LOCKED claims, the lease, and its fencing.

The rows are dated in the year 2000, so they are the most overdue in the tests' schema
whatever other tests left there, and a claim reaches them first.
"""

from __future__ import annotations

import threading
from datetime import datetime

import pytest
from sqlalchemy import delete, insert, select, update

from mailintake.database import engine_for
from services.sender.core import RetryLater
from services.sender.outbox import claim_next, record_delivered, record_failed
from services.ticketer.tables import OutboundMail

pytestmark = pytest.mark.stack

LEASE, MAX_ATTEMPTS = 300.0, 5


@pytest.fixture
def rows(outbox_database, unique):
    """Two due rows: ``first`` (most overdue) and ``second``; their ids."""
    engine = engine_for(outbox_database)
    ids = []
    with engine.begin() as connection:
        for n, due in enumerate((datetime(2000, 1, 1), datetime(2000, 1, 2))):
            ids.append(
                connection.scalar(
                    insert(OutboundMail)
                    .values(
                        dedupe_key=f"claims-{unique}-{n}", kind="auto_answer", account_id=f"claims-{unique}",
                        sender_address="helpdesk@mailintake.test", recipient=f"nobody{unique}@mailintake.test",
                        subject="s", message_id=f"<claims-{unique}-{n}@mailintake.test>", body_text="b",
                        next_attempt_at=due,
                    )
                    .returning(OutboundMail.id)
                )
            )
    yield ids
    with engine.begin() as connection:
        connection.execute(delete(OutboundMail).where(OutboundMail.id.in_(ids)))


def test_a_claim_skips_a_row_another_replica_is_claiming_instead_of_waiting_for_it(outbox_database, rows):
    engine = engine_for(outbox_database)
    first, second = rows
    claimed = []
    with engine.begin() as other_replica:
        # Another replica is in the middle of claiming the most overdue row.
        other_replica.execute(select(OutboundMail.id).where(OutboundMail.id == first).with_for_update())
        thread = threading.Thread(target=lambda: claimed.append(claim_next(engine, LEASE, MAX_ATTEMPTS)))
        thread.start()
        thread.join(timeout=10)
        blocked = thread.is_alive()
    thread.join()
    assert not blocked, "the claim waited for the other replica's lock instead of skipping the row"
    assert claimed[0].id == second


def test_a_claimed_row_is_leased_and_a_sender_that_lost_its_lease_cannot_record(outbox_database, rows):
    engine = engine_for(outbox_database)
    first, _second = rows
    mine = claim_next(engine, LEASE, MAX_ATTEMPTS)
    assert (mine.id, mine.attempts) == (first, 1)
    assert claim_next(engine, LEASE, MAX_ATTEMPTS).id != first, "a leased row is not due for other replicas"

    # The lease runs out (this sender hangs); another replica claims the row again.
    with engine.begin() as connection:
        connection.execute(update(OutboundMail).where(OutboundMail.id == first).values(next_attempt_at=datetime(2000, 1, 1)))
    theirs = claim_next(engine, LEASE, MAX_ATTEMPTS)
    assert (theirs.id, theirs.attempts) == (first, 2)
    assert record_delivered(engine, mine, "250 late") is False, "the stale sender must not overwrite the new claim"
    assert record_failed(engine, theirs, "451 try later", RetryLater(60)) is True
    with engine.connect() as connection:
        row = connection.execute(select(OutboundMail).where(OutboundMail.id == first)).one()
    assert (row.status, row.attempts, row.last_smtp_reply) == ("pending", 2, "451 try later")


def test_a_row_whose_last_attempt_died_mid_send_is_not_sent_again(outbox_database, rows):
    engine = engine_for(outbox_database)
    first, second = rows
    with engine.begin() as connection:
        connection.execute(
            update(OutboundMail).where(OutboundMail.id == first).values(status="sending", attempts=MAX_ATTEMPTS)
        )
    assert claim_next(engine, LEASE, MAX_ATTEMPTS).id == second
