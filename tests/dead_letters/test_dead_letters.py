"""``mailintake dlq``: selecting letters, the replay policy, and list/replay on the real Kafka."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
from typer.testing import CliRunner

from mailintake.contracts.records import DeadLetter, MailRaw, SenderIdentity, TicketOptions, decode_record, encode_record
from mailintake.dead_letters.cli import dlq_app
from mailintake.dead_letters.replay_plan import Replay, Skip, plan_replay
from mailintake.dead_letters.selection import LetterFilter, StoredLetter, parse_time
from mailintake.runtime.producer_sizes import MAX_REQUEST_BYTES

NOW = dt.datetime(2024, 12, 10, 12, 0, tzinfo=dt.UTC)


def letter(reason: str = "mail has no sender", service: str = "classifier", topic: str = "mail.raw",
           failed_at: dt.datetime = NOW, value: bytes | None = b"\x00\x00\x00\x00\x01x") -> DeadLetter:
    return DeadLetter(
        service=service, source_topic=topic, source_partition=2, source_offset=40, reason=reason,
        exception_type="mailintake.contracts.errors.InvalidMessage", failed_at=failed_at,
        original_key=b"support", original_value=value,
    )


def stored(offset: int, **kwargs) -> StoredLetter:
    return StoredLetter(0, offset, letter(**kwargs))


# ---------------------------------------------------------------- pure parts

def test_filter_needs_every_condition():
    selection = LetterFilter(reason_contains="SENDER", service="classifier", since=NOW - dt.timedelta(hours=1))
    assert selection.matches(stored(1))
    assert not selection.matches(stored(2, service="ticketer"))
    assert not selection.matches(stored(3, reason="schema id"))
    assert not selection.matches(stored(4, failed_at=NOW - dt.timedelta(hours=2)))


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("90m", NOW - dt.timedelta(minutes=90)),
        ("2d", NOW - dt.timedelta(days=2)),
        ("2024-12-09", dt.datetime(2024, 12, 9, tzinfo=dt.UTC)),
        ("2024-12-09T08:00:00+01:00", dt.datetime(2024, 12, 9, 7, tzinfo=dt.UTC)),
    ],
)
def test_parse_time(text, moment):
    assert parse_time(text, NOW) == moment


def test_parse_time_refuses_nonsense():
    with pytest.raises(ValueError, match="neither an ISO date"):
        parse_time("yesterday", NOW)


def test_replay_plan_skips_what_was_replayed_unless_again():
    letters = [stored(1), stored(2)]
    plan = plan_replay(letters, replayed={(0, 1)})
    assert [type(item) for item in plan] == [Skip, Replay]
    assert "already replayed" in plan[0].why
    assert all(isinstance(item, Replay) for item in plan_replay(letters, replayed={(0, 1)}, again=True))


def test_replay_plan_defaults_to_the_source_topic_and_refuses_other_topics():
    (to_source,) = plan_replay([stored(1, topic="mail.classified")], set())
    assert to_source.to_topic == "mail.classified"
    (refused,) = plan_replay([stored(1)], set(), to_topic="mail.dlq")
    assert isinstance(refused, Skip) and "no topic a letter may be replayed to" in refused.why


def test_replay_plan_skips_letters_without_their_value():
    (item,) = plan_replay([stored(1, value=None)], set())
    assert isinstance(item, Skip) and "claim check" in item.why


def test_ledger_entry_names_the_letter_and_where_it_went():
    entry = Replay(stored(7), "mail.raw").ledger_entry(NOW)
    assert (entry.dlq_partition, entry.dlq_offset, entry.to_topic, entry.source_offset) == (0, 7, "mail.raw", 40)


def test_replay_without_any_filter_needs_all():
    result = CliRunner().invoke(dlq_app, ["replay", "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 2
    assert "or pass --all" in result.output


# ---------------------------------------------------------------- on the real Kafka

@pytest.mark.stack
def test_replay_produces_each_letter_once_however_often_it_runs(stack):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.structs import TopicPartition

    bootstrap = stack.kafka_bootstrap
    marker = f"replay-test-{uuid.uuid4().hex[:10]}"
    account = f"dlq-replay-{marker}"
    # Over a megabyte, as an inline mail may be: kafka-python's producers refuse records
    # over 1 MiB unless told the topics' limit.
    raw = b"From: a@b.c\r\n\r\n" + b"x" * (1200 * 1024)
    mail = MailRaw(
        account_id=account, account_name="replay test", protocol="IMAP", source_id=f"imap:1:{marker}",
        poll_cycle=1, poll_interval_seconds=60, fetched_at=NOW, size=len(raw), raw=raw,
        sender_identity=SenderIdentity(), ticket_options=TicketOptions(),
    )
    original = encode_record("mail.raw", mail)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_REQUEST_BYTES)
    for _ in range(2):
        producer.send("mail.dlq", key=b"mail.raw:0:0", value=encode_record("mail.dlq", letter(
            reason=f"{marker}: parser bug", failed_at=dt.datetime.now(dt.UTC), value=original,
        )))
    producer.flush()
    producer.close()
    ends = _end_offsets(bootstrap, "mail.raw")

    runner = CliRunner()
    env = {**os.environ, "MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    listed = runner.invoke(dlq_app, ["list", "--reason-contains", marker], env=env)
    assert listed.exit_code == 0, listed.output
    assert listed.output.count(marker) == 2 and "replayed" not in listed.output.split("REASON", 1)[1]

    dry = runner.invoke(dlq_app, ["replay", "--reason-contains", marker, "--dry-run"], env=env)
    assert "2 of 2 selected letters would be replayed" in dry.output, dry.output
    first = runner.invoke(dlq_app, ["replay", "--reason-contains", marker], env=env)
    assert first.exit_code == 0, first.output
    assert "2 of 2 selected letters replayed" in first.output
    second = runner.invoke(dlq_app, ["replay", "--reason-contains", marker], env=env)
    assert second.exit_code == 0, second.output
    assert "0 of 2 selected letters replayed" in second.output and second.output.count("already replayed") == 2

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed", consumer_timeout_ms=3000)
    partitions = [TopicPartition("mail.raw", p) for p in consumer.partitions_for_topic("mail.raw")]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, ends[tp])
    replayed = [m for m in consumer if m.value == original]
    consumer.close()
    assert len(replayed) == 2, "each letter replayed exactly once"
    assert all(dict(m.headers)["mailintake-replay-of"].startswith(b"mail.dlq:") for m in replayed)
    assert decode_record("mail.raw", replayed[0].value).account_id == account
    relisted = runner.invoke(dlq_app, ["list", "--reason-contains", marker], env=env)
    assert relisted.output.count(" replayed ") == 2, relisted.output


def _end_offsets(bootstrap, topic):  # noqa: ANN001, ANN202
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return consumer.end_offsets(partitions)
    finally:
        consumer.close()
