"""The ticketer as a process on the real stack: mail.classified records in, PostgreSQL rows
and ticket.events out; dead letters, the DLQ cap, SIGTERM, replays and the window table."""

from __future__ import annotations

import time

import pytest
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata, TopicPartition
from sqlalchemy import select

from mailintake.contracts.records import Decision
from mailintake.database import engine_for
from services.ticketer.bundle_join import TABLE_NAME
from services.ticketer.tables import ProcessedMail, Ticket, TicketStep
from tests.ticketer.mails import classified
from tests.ticketer.running_ticketer import (
    Producer,
    RunningTicketer,
    committed_offsets,
    dead_letters,
    delete_group_and_topics,
    group_members,
    place_group_at_end,
    ticket_events,
    wait_for_handled,
)

pytestmark = pytest.mark.stack


@pytest.fixture
def producer(stack):
    producer = Producer(stack.kafka_bootstrap)
    yield producer
    producer.close()


@pytest.fixture
def new_ticketer(stack, unique, tmp_path):
    """Start a ticketer of a fresh group (placed at the topic's end); stopped at teardown."""
    started = []

    def start(group_suffix: str = "", **settings) -> RunningTicketer:
        group = f"test-ticketer-{unique}{group_suffix}"
        if not started or started[-1].group != group:
            place_group_at_end(stack.kafka_bootstrap, group)
        ticketer = RunningTicketer(stack, group, tmp_path / f"ticketer-{len(started)}.log", **settings).start()
        started.append(ticketer)
        return ticketer

    yield start
    for ticketer in started:
        ticketer.close()
    for group in {t.group for t in started}:
        delete_group_and_topics(stack.kafka_bootstrap, group)


def now_ms() -> int:
    return int(time.time() * 1000)


def ledger(stack, account_id):
    with engine_for(stack.database_url).connect() as c:
        return {r.source_id: r for r in c.execute(select(ProcessedMail).where(ProcessedMail.account_id == account_id))}


def test_every_effect_is_an_event_keyed_by_its_ticket(stack, unique, producer, new_ticketer):
    ticketer = new_ticketer()
    account = f"svc-{unique}"
    since = now_ms()
    options = dict(create_user_from_local_part=True, create_location_from_domain=True)
    producer.send(
        [
            classified(account, "1", sender=f"max@kunde-{unique}.test", **options),
            classified(account, "2", decision=Decision.REJECT, reason="the account accepts follow-ups only"),
        ]
    )
    assert wait_for_handled(stack.database_url, account, 2, ticketer=ticketer) == 2
    number = ledger(stack, account)["1"].ticket_number
    producer.send(
        [classified(account, "3", decision=Decision.FOLLOW_UP, reference=f"[#mi-{number}]", subject=f"Re: [#mi-{number}]", **options)]
    )
    assert wait_for_handled(stack.database_url, account, 3, ticketer=ticketer) == 3
    events = {e.event_id: e for e in ticket_events(stack.kafka_bootstrap, account, since, want=5)}
    assert sorted((e.source_id, e.kind.value, e.ticket_number) for e in events.values()) == [
        ("1", "LOCATION_CREATED", number),
        ("1", "TICKET_CREATED", number),
        ("1", "USER_CREATED", number),
        ("2", "MAIL_REJECTED", None),
        ("3", "STEP_ADDED", number),
    ]
    assert events[f"{account}:2:MAIL_REJECTED"].reason == "the account accepts follow-ups only"
    assert ledger(stack, account)["2"].raw_sha256 == classified(account, "2").raw_sha256
    # Another group's ticketer on the shared topic may have written it first: then this one replayed it.
    assert sum(ticketer.metric("mailintake_ticketer_outcomes_total", outcome="STEP_ADDED", replay=r) for r in ("true", "false")) >= 1


def test_an_undecodable_record_is_dead_lettered_with_its_source_and_the_rest_goes_on(stack, unique, producer, new_ticketer):
    ticketer = new_ticketer()
    account = f"svc-{unique}"
    since = now_ms()
    broken = producer.send_raw(b"broken", b"\x00\x00\x00\x00\x01 not an avro record " + unique.encode())
    producer.send([classified(account, "1", fallback_user=None, create_user_from_local_part=True)])
    assert wait_for_handled(stack.database_url, account, 1, ticketer=ticketer) == 1
    # Every group's ticketer on the shared topic dead-letters it: one letter each, all alike.
    letters = dead_letters(stack.kafka_bootstrap, since, {broken})
    assert letters and all(other.source_offset == letters[0].source_offset for other in letters)
    letter = letters[0]
    assert (letter.service, letter.source_topic, letter.source_partition, letter.source_offset) == ("ticketer", "mail.classified", *broken)
    assert letter.original_key == b"broken" and unique.encode() in letter.original_value
    assert letter.exception_type == "mailintake.contracts.errors.InvalidMessage" and "schema id" in letter.reason


def test_the_dlq_cap_stops_the_ticketer_before_it_commits(stack, unique, producer, new_ticketer):
    ticketer = new_ticketer(max_dlq_ratio=0.01)
    account = f"svc-{unique}"
    producer.send([classified(account, str(i), auto_bundle=False, create_user_from_local_part=True) for i in range(55)])
    assert wait_for_handled(stack.database_url, account, 55, ticketer=ticketer) == 55
    before = committed_offsets(stack.kafka_bootstrap, ticketer.group)
    broken = [producer.send_raw(b"broken", b"junk") for _ in range(3)]
    assert ticketer.process.wait(60) != 0
    assert "DlqRateExceeded" in ticketer.log_tail()
    after = committed_offsets(stack.kafka_bootstrap, ticketer.group)
    assert all(after.get(p, 0) <= o for p, o in broken), "the batch that tripped the cap was committed"
    assert after.keys() == before.keys()


def test_sigterm_commits_what_was_handled_and_leaves_the_group(stack, unique, producer, new_ticketer):
    ticketer = new_ticketer()
    account = f"svc-{unique}"
    positions = producer.send([classified(account, str(i), auto_bundle=False, fallback_user=None, create_user_from_local_part=True) for i in range(40)])
    assert len(ticketer.wait_handled(account, 40)) == 40, ticketer.log_tail()
    assert ticketer.stop() == 0, ticketer.log_tail()
    committed = committed_offsets(stack.kafka_bootstrap, ticketer.group)
    assert all(committed[p] > o for p, o in positions)
    assert group_members(stack.kafka_bootstrap, ticketer.group) == 0


def test_a_replay_changes_nothing_and_re_emits_the_same_events(stack, unique, producer, new_ticketer):
    ticketer = new_ticketer()
    account = f"svc-{unique}"
    since = now_ms()
    mails = [classified(account, str(i), poll_cycle=i // 2, create_user_from_local_part=True) for i in range(6)]
    positions = producer.send(mails)
    assert len(ticketer.wait_handled(account, 6)) == 6, ticketer.log_tail()
    first = ticket_events(stack.kafka_bootstrap, account, since, want=4)
    assert ticketer.stop() == 0
    rows_before = ledger(stack, account)
    # Rewind the group to the first of these records and run it again.
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    start = {}
    for partition, offset in positions:
        start[partition] = min(start.get(partition, offset), offset)
    admin.alter_group_offsets(ticketer.group, {TopicPartition("mail.classified", p): OffsetAndMetadata(o, "", -1) for p, o in start.items()})
    admin.close()
    again = new_ticketer()
    assert again.wait_handled(account, 6) == {str(i): True for i in range(6)}, again.log_tail()
    assert ledger(stack, account).keys() == rows_before.keys()
    assert all(ledger(stack, account)[k].processed_at == rows_before[k].processed_at for k in rows_before)
    events = ticket_events(stack.kafka_bootstrap, account, since, timeout=10)
    by_id: dict = {}
    for event in events:
        by_id.setdefault(event.event_id, []).append(event)
    assert {i: v[0] for i, v in by_id.items()} == {e.event_id: e for e in first}
    assert all(len(copies) >= 2 and all(c == copies[0] for c in copies) for copies in by_id.values())


def test_the_window_table_comes_back_after_a_restart_and_losing_it_opens_no_second_ticket(stack, unique, producer, new_ticketer):
    account = f"svc-{unique}"
    options = dict(create_user_from_local_part=True)
    first = new_ticketer()
    producer.send([classified(account, "1", poll_cycle=10, **options)])
    assert "1" in first.wait_handled(account, 1), first.log_tail()
    assert first.stop() == 0

    restarted = new_ticketer()
    producer.send([classified(account, "2", poll_cycle=11, **options)])
    assert "2" in restarted.wait_handled(account, 1), restarted.log_tail()
    assert restarted.metric("mailintake_ticketer_bundle_join_total", result="hit") == 1, "the table was not recovered"
    assert restarted.stop() == 0

    # A rebalance or a lost topic that leaves the table empty: every look-up misses.
    changelog = f"{restarted.group}-{TABLE_NAME}-changelog"
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
    admin.delete_topics([changelog])
    deadline = time.monotonic() + 30
    while changelog in admin.list_topics() and time.monotonic() < deadline:
        time.sleep(0.3)
    admin.close()
    emptied = new_ticketer()
    producer.send([classified(account, "3", poll_cycle=11, **options), classified(account, "4", poll_cycle=12, **options)])
    assert emptied.wait_handled(account, 2).keys() == {"3", "4"}, emptied.log_tail()
    assert emptied.metric("mailintake_ticketer_bundle_join_total", result="hit") == 0
    assert emptied.metric("mailintake_ticketer_bundle_join_total", result="miss") >= 2
    rows = ledger(stack, account)
    opened, later = rows["1"].ticket_number, rows["4"].ticket_number
    # Cycle 11 joins the ticket opened in 10; cycle 12 is two cycles on and opens another.
    assert [(rows[s].outcome, rows[s].ticket_number) for s in "1234"] == [
        ("TICKET_CREATED", opened), ("STEP_ADDED", opened), ("STEP_ADDED", opened), ("TICKET_CREATED", later),
    ]
    with engine_for(stack.database_url).connect() as c:
        assert c.scalars(select(Ticket.number).where(Ticket.source_account_id == account).order_by(Ticket.number)).all() == [opened, later]
        steps = c.scalars(select(TicketStep.source_id).where(TicketStep.ticket_number == opened).order_by(TicketStep.position))
        assert steps.all() == ["1", "2", "3"]
