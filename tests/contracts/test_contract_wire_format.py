"""The Confluent wire format: framing, schema resolution across versions, and bad input."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import struct

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailintake.contracts import InvalidMessage, SchemaMismatch, TopicCodec, decode, decode_record, encode
from mailintake.contracts.examples import example_messages
from mailintake.contracts.registry import FileRegistry
from mailintake.contracts.topics import load_topics

TOPICS = load_topics()
EXAMPLES = [(t.name, m.value) for t in TOPICS.values() for m in example_messages(t)]
ENCODED = [(name, encode(name, value)) for name, value in EXAMPLES]
# The id each topic's current schema version has in schemas/registry.yaml.
IDS = {"mail.raw": 1, "mail.classified": 5, "ticket.events": 3, "mail.dlq": 4, "mail.dlq.replays": 6, "accounts": 7}


def test_values_carry_magic_byte_and_big_endian_schema_id():
    for topic_name, data in ENCODED:
        assert data[0] == 0
        assert struct.unpack(">I", data[1:5])[0] == IDS[topic_name]


def test_avro_body_is_plain_binary_encoding():
    # What a Confluent deserializer does: skip five bytes, read Avro binary.
    import io

    from avro.io import BinaryDecoder, DatumReader

    topic = TOPICS["ticket.events"]
    value = example_messages(topic)[0].value
    schema = TopicCodec(topic, FileRegistry(topic.folder / "registry.yaml")).schema
    body = encode("ticket.events", value)[5:]
    assert DatumReader(schema).read(BinaryDecoder(io.BytesIO(body))) == value


def test_encoding_a_wrong_record_names_topic_and_field():
    topic_name, example = next((name, value) for name, value in EXAMPLES if name == "mail.raw")
    value = dict(example)
    value["poll_cycle"] = "eleven"
    with pytest.raises(SchemaMismatch, match=rf"^{topic_name}: field poll_cycle: expected long"):
        encode(topic_name, value)


def test_encoding_fills_defaults_and_refuses_unknown_fields():
    value = {
        "event_id": "e",
        "kind": "MAIL_REJECTED",
        "occurred_at": dt.datetime(2024, 11, 29, tzinfo=dt.UTC),
        "account_id": "support",
        "source_id": "imap:1:2",
    }
    assert decode("ticket.events", encode("ticket.events", value)) == {
        **value,
        "ticket_number": None,
        "subject": None,
        "reason": None,
    }
    with pytest.raises(SchemaMismatch, match="field colour: unknown field"):
        encode("ticket.events", {**value, "colour": "blue"})


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter than the 5-byte"),
        (b"\x01\x00\x00\x00\x01abc", "magic byte is 0x01"),
        (b"\x00\x00\x00\x03\xe7\x00", "no schema with id 999"),
        (ENCODED[0][1][:-3], "body is not a record of schema id"),
        (ENCODED[0][1] + b"\x00", "1 bytes left over"),
    ],
    ids=["empty", "bad magic", "unknown id", "truncated", "trailing bytes"],
)
def test_bad_values_raise_invalid_message_with_the_reason(data, reason):
    topic_name = ENCODED[0][0]
    with pytest.raises(InvalidMessage, match=reason) as caught:
        decode(topic_name, data)
    assert caught.value.topic == topic_name


def test_a_value_of_another_topic_is_refused():
    data = dict(ENCODED)["mail.dlq"]
    with pytest.raises(InvalidMessage, match="registered for mail.dlq-value, not mail.raw-value"):
        decode("mail.raw", data)


def test_records_written_with_an_older_version_are_read_into_the_current_shape(tmp_path):
    """A new version of mail.raw adds a field with a default; v1 records still decode."""
    folder = tmp_path / "schemas"
    shutil.copytree(TOPICS["mail.raw"].folder, folder)
    definition = json.loads((folder / "mail.raw.avsc").read_text())
    definition["fields"].append(
        {"name": "folder", "type": ["null", "string"], "default": None, "doc": "Source folder."}
    )
    (folder / "mail.raw.avsc").write_text(json.dumps(definition, indent=2))
    shutil.copy(folder / "mail.raw.avsc", folder / "history" / "mail.raw" / "v2.avsc")
    registry = yaml.safe_load((folder / "registry.yaml").read_text())
    next_id = max(v["id"] for versions in registry["subjects"].values() for v in versions) + 1
    registry["subjects"]["mail.raw-value"].append({"version": 2, "id": next_id, "schema": "history/mail.raw/v2.avsc"})
    (folder / "registry.yaml").write_text(yaml.safe_dump(registry))

    new_codec = TopicCodec(load_topics(folder)["mail.raw"], FileRegistry(folder / "registry.yaml"))
    old_value = example_messages(TOPICS["mail.raw"])[0].value
    old_data = encode("mail.raw", old_value)

    assert new_codec.decode(old_data) == {**old_value, "folder": None}
    new_data = new_codec.encode({**old_value, "folder": "INBOX"})
    assert new_data[1:5] == struct.pack(">I", next_id)
    assert new_codec.decode(new_data)["folder"] == "INBOX"


def _flip(data: bytes, position: int, byte: int) -> bytes:
    position %= len(data)
    return data[:position] + bytes([byte]) + data[position + 1 :]


_frames = st.builds(
    lambda schema_id, body: b"\x00" + struct.pack(">I", schema_id) + body,
    st.sampled_from([1, 2, 3, 4, 5, 0, 2**32 - 1]),
    st.binary(max_size=400),
)
_truncated = st.builds(lambda pair, n: (pair[0], pair[1][:n]), st.sampled_from(ENCODED), st.integers(0, 700))
_mutated = st.builds(
    lambda pair, pos, byte: (pair[0], _flip(pair[1], pos, byte)),
    st.sampled_from(ENCODED),
    st.integers(5, 10_000),
    st.integers(0, 255),
)
_garbage = st.one_of(
    st.tuples(st.sampled_from(list(TOPICS)), st.binary(max_size=400)),
    st.tuples(st.sampled_from(list(TOPICS)), _frames),
    _truncated,
    _mutated,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_garbage)
def test_garbage_raises_invalid_message_and_nothing_else(pair):
    topic_name, data = pair
    try:
        decode_record(topic_name, data)
    except InvalidMessage:
        pass


def test_dead_lettered_value_in_the_dlq_example_is_a_real_mail_raw_value():
    letter = example_messages(TOPICS["mail.dlq"])[1].value
    assert letter["original_value"] == encode("mail.raw", example_messages(TOPICS["mail.raw"])[1].value)
    assert decode_record("mail.raw", letter["original_value"]).claim_check.sha256 == letter["claim_check_sha256"]
