"""The examples in schemas/*.yaml: valid, round-tripping, readable by every consumer."""

from __future__ import annotations

import copy

import pytest

from mailintake.contracts import (
    CONSUMER_READERS,
    SchemaMismatch,
    decode,
    decode_record,
    encode,
    encode_record,
    record_key,
    record_type,
)
from mailintake.contracts.avsc import load_schema
from mailintake.contracts.examples import conform_example, example_messages
from mailintake.contracts.topics import Example, load_topics

TOPICS = load_topics()
EXAMPLES = [(topic, message) for topic in TOPICS.values() for message in example_messages(topic)]

# The services and tools that may write to a topic (the DLQ command line writes its replay ledger).
PIPELINE_SERVICES = {"fetcher", "classifier", "ticketer", "dlq-cli", "accounts-cli"}


@pytest.fixture(params=EXAMPLES, ids=lambda pair: f"{pair[0].name}: {pair[1].name}")
def example(request):
    return request.param


def test_there_is_a_contract_beside_every_schema():
    folder = next(iter(TOPICS.values())).folder
    assert {p.name for p in folder.glob("*.avsc")} == {t.schema_file for t in TOPICS.values()}


@pytest.mark.parametrize("topic", TOPICS.values(), ids=lambda t: t.name)
def test_topic_has_two_examples_and_known_producers(topic):
    assert len(topic.examples) >= 2
    assert set(topic.producers) <= PIPELINE_SERVICES


def test_every_example_round_trips(example):
    topic, message = example
    assert decode(topic.name, encode(topic.name, message.value)) == message.value


def test_every_example_round_trips_as_a_typed_record(example):
    topic, message = example
    record = record_type(topic.name).from_avro(message.value)
    assert record.to_avro() == message.value
    assert decode_record(topic.name, encode_record(topic.name, record)) == record


def test_every_example_key_follows_the_key_rule(example):
    topic, message = example
    record = record_type(topic.name).from_avro(message.value)
    assert message.key == record_key(record), topic.key.format


@pytest.mark.parametrize(
    ("topic", "consumer"),
    [(t, c) for t in TOPICS.values() for c in t.consumers],
    ids=lambda v: getattr(v, "name", v),
)
def test_every_consumer_reads_every_example_of_its_topic(topic, consumer):
    reader = CONSUMER_READERS[consumer]
    assert reader.topic == topic.name
    for message in example_messages(topic):
        record = reader(encode(topic.name, message.value))
        assert record == record_type(topic.name).from_avro(message.value)


def test_every_registered_consumer_appears_in_a_contract():
    named = {c for t in TOPICS.values() for c in t.consumers}
    assert set(CONSUMER_READERS) == named


def test_inline_raw_mail_sizes_add_up():
    for topic, message in EXAMPLES:
        value = message.value
        if topic.name == "mail.raw":
            assert (value["raw"] is None) != (value["claim_check"] is None)
            if value["raw"] is not None:
                assert value["size"] == len(value["raw"])
            else:
                assert value["size"] == value["claim_check"]["size"]


def _with_wrong_field(topic_name: str, path: list[str], wrong: object) -> Example:
    topic = TOPICS[topic_name]
    value = copy.deepcopy(topic.examples[0].value)
    node = value
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = wrong
    return Example(name="deliberately wrong", key="k", value=value)


@pytest.mark.parametrize(
    ("topic_name", "path", "wrong", "field"),
    [
        ("mail.raw", ["ticket_options", "auto_bundle"], "yes", "ticket_options.auto_bundle"),
        ("mail.raw", ["fetched_at"], "2024-11-29T09:14:03Z", "fetched_at"),
        ("mail.raw", ["protocol"], "SMTP", "protocol"),
        ("mail.raw", ["claim_check"], {"store": "postgres", "sha256": "00", "size": "big"}, "claim_check.size"),
        ("mail.classified", ["rules_fired"], ["new-ticket", 7], "rules_fired[1]"),
        ("mail.classified", ["subject"], None, "subject"),
        ("ticket.events", ["colour"], "blue", "colour"),
        ("mail.dlq", ["original_value"], {"base64": "not base64!"}, "original_value"),
    ],
)
def test_a_wrong_example_fails_naming_the_file_and_field(topic_name, path, wrong, field):
    topic = TOPICS[topic_name]
    bad = _with_wrong_field(topic_name, path, wrong)
    with pytest.raises(SchemaMismatch) as caught:
        conform_example(topic, 2, bad, load_schema(topic.schema_path))
    message = str(caught.value)
    assert f"{topic_name}.yaml" in message
    assert f"field {field}:" in message
    assert caught.value.field == field


def test_a_missing_required_field_is_named():
    topic = TOPICS["ticket.events"]
    value = copy.deepcopy(topic.examples[0].value)
    del value["account_id"]
    with pytest.raises(SchemaMismatch, match=r"ticket\.events\.yaml example 1 .*field account_id: required"):
        conform_example(topic, 0, Example(name="x", key="k", value=value), load_schema(topic.schema_path))
