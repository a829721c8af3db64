"""The typed records mirror the Avro schemas exactly, so neither can drift from the other."""

from __future__ import annotations

import datetime as dt
import types
import typing
from enum import Enum

import pytest
from avro.schema import EnumSchema, RecordSchema, Schema, UnionSchema
from pydantic import ValidationError

from mailintake.contracts import (
    RECORD_TYPES,
    AvroRecord,
    InvalidMessage,
    MailRaw,
    TicketEvent,
    TicketEventKind,
    decode_record,
    encode,
    encode_record,
    record_decoder,
    record_encoder,
)
from mailintake.contracts.avsc import load_schema
from mailintake.contracts.datum import DatumForm, conform
from mailintake.contracts.topics import load_topics

TOPICS = load_topics()


def _branches(annotation: object) -> tuple[object, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _named(schema: Schema, kind: type) -> Schema | None:
    candidates = schema.schemas if isinstance(schema, UnionSchema) else [schema]
    return next((s for s in candidates if isinstance(s, kind)), None)


def _assert_mirrors(schema: RecordSchema, model: type[AvroRecord], path: str) -> None:
    assert [f.name for f in schema.fields] == list(model.model_fields), f"{path}: field names or order differ"
    for field in schema.fields:
        where = f"{path}.{field.name}"
        info = model.model_fields[field.name]
        assert field.has_default == (not info.is_required()), f"{where}: default present in one only"
        if field.has_default:
            avro_default = conform(field.type, field.default, form=DatumForm.AVRO_JSON, where=where)
            assert info.default == avro_default, f"{where}: defaults differ"
        branches = _branches(info.annotation)
        record_schema = _named(field.type, RecordSchema)
        if record_schema is not None:
            nested = next(b for b in branches if isinstance(b, type) and issubclass(b, AvroRecord))
            _assert_mirrors(record_schema, nested, where)
        enum_schema = _named(field.type, EnumSchema)
        if enum_schema is not None:
            enum = next(b for b in branches if isinstance(b, type) and issubclass(b, Enum))
            assert [e.value for e in enum] == list(enum_schema.symbols), f"{where}: enum symbols differ"
            assert enum.__name__ == enum_schema.name, f"{where}: enum names differ"


@pytest.mark.parametrize("topic", TOPICS.values(), ids=lambda t: t.name)
def test_typed_record_mirrors_the_schema(topic):
    schema = load_schema(topic.schema_path)
    model = RECORD_TYPES[topic.name]
    assert model.__name__ == schema.name
    _assert_mirrors(schema, model, topic.name)


def test_every_topic_has_a_record_type():
    assert set(RECORD_TYPES) == set(TOPICS)


def test_models_are_frozen():
    event = TicketEvent(
        event_id="e",
        kind=TicketEventKind.STEP_ADDED,
        occurred_at=dt.datetime.now(dt.UTC),
        account_id="a",
        source_id="s",
    )
    with pytest.raises(ValidationError):
        event.subject = "changed"


def test_timestamps_are_utc_to_the_millisecond():
    berlin = dt.timezone(dt.timedelta(hours=1))
    event = TicketEvent(
        event_id="e",
        kind="TICKET_CREATED",
        occurred_at=dt.datetime(2024, 11, 29, 10, 14, 5, 240_999, tzinfo=berlin),
        account_id="a",
        source_id="s",
    )
    assert event.occurred_at == dt.datetime(2024, 11, 29, 9, 14, 5, 240_000, tzinfo=dt.UTC)
    assert event.occurred_at.tzinfo is dt.UTC
    assert decode_record("ticket.events", encode_record("ticket.events", event)) == event


def test_naive_timestamps_are_refused():
    with pytest.raises(ValidationError, match="timezone"):
        TicketEvent(
            event_id="e", kind="TICKET_CREATED", occurred_at=dt.datetime(2024, 1, 1), account_id="a", source_id="s"
        )


def test_int_fields_keep_avro_ranges():
    with pytest.raises(ValidationError, match="poll_interval_seconds"):
        MailRaw.model_validate(
            {
                "account_id": "a",
                "account_name": "A",
                "protocol": "IMAP",
                "source_id": "imap:1:1",
                "poll_cycle": 1,
                "poll_interval_seconds": 2**31,
                "fetched_at": dt.datetime.now(dt.UTC),
                "size": 0,
                "sender_identity": {},
                "ticket_options": {},
            }
        )


def test_encoding_a_record_on_the_wrong_topic_is_refused():
    event = TicketEvent(
        event_id="e", kind="MAIL_REJECTED", occurred_at=dt.datetime.now(dt.UTC), account_id="a", source_id="s"
    )
    with pytest.raises(TypeError, match="mail.raw carries MailRaw, not TicketEvent"):
        encode_record("mail.raw", event)


def test_decoding_a_record_of_another_topic_raises_invalid_message():
    event = TicketEvent(
        event_id="e", kind="MAIL_REJECTED", occurred_at=dt.datetime.now(dt.UTC), account_id="a", source_id="s"
    )
    data = encode("ticket.events", event.to_avro())
    with pytest.raises(InvalidMessage):
        decode_record("mail.dlq", data)


def test_a_batch_decoder_reads_what_a_batch_encoder_wrote_and_refuses_what_does_not_fit():
    events = [
        TicketEvent(event_id=f"e{n}", kind="STEP_ADDED", occurred_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), account_id="a", source_id=f"s{n}")
        for n in range(3)
    ]
    encode_event, decode_event = record_encoder("ticket.events"), record_decoder("ticket.events")

    assert [decode_event(encode_event(e)) for e in events] == events
    with pytest.raises(InvalidMessage, match="registered for ticket.events-value, not mail.dlq-value"):
        record_decoder("mail.dlq")(encode_event(events[0]))
