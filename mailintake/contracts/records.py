"""Typed records: frozen pydantic models mirroring the Avro schemas field for field.

``tests/contracts`` checks that every model has exactly its schema's fields, in
order, with the same defaults, so the two cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from enum import Enum, StrEnum
from typing import Annotated, Any, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from mailintake.contracts.codec import codec_for
from mailintake.contracts.errors import InvalidMessage


def _utc_millis(value: dt.datetime) -> dt.datetime:
    # The wire keeps milliseconds only; dropping the rest here means a record
    # equals itself after a trip through Kafka.
    value = value.astimezone(dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


UtcTimestamp = Annotated[AwareDatetime, AfterValidator(_utc_millis)]
"""A timestamp-millis field: timezone-aware, held in UTC to the millisecond."""
Int = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
Long = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


def _to_datum(value: Any) -> Any:
    if isinstance(value, AvroRecord):
        return value.to_avro()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_to_datum(v) for v in value]
    return value


class AvroRecord(BaseModel):
    """Base of the typed records: frozen, no unknown fields, convertible to Avro datums."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_avro(self) -> dict[str, Any]:
        """The record as an Avro datum (what ``encode`` takes)."""
        return {name: _to_datum(getattr(self, name)) for name in type(self).model_fields}

    @classmethod
    def from_avro(cls, datum: Mapping[str, Any]) -> Self:
        """The record from an Avro datum (what ``decode`` returns)."""
        return cls.model_validate(datum)


class Protocol(StrEnum):
    IMAP = "IMAP"
    POP3 = "POP3"
    EWS = "EWS"
    GRAPH = "GRAPH"


class Decision(StrEnum):
    NEW_TICKET = "NEW_TICKET"
    FOLLOW_UP = "FOLLOW_UP"
    REJECT = "REJECT"


class TicketEventKind(StrEnum):
    TICKET_CREATED = "TICKET_CREATED"
    STEP_ADDED = "STEP_ADDED"
    USER_CREATED = "USER_CREATED"
    LOCATION_CREATED = "LOCATION_CREATED"
    MAIL_REJECTED = "MAIL_REJECTED"


class ClaimCheck(AvroRecord):
    """Reference to raw bytes too large to travel inline."""

    store: str
    sha256: str
    size: Long


class SenderIdentity(AvroRecord):
    """The account's sender information, used for auto-answers."""

    name: str | None = None
    address: str | None = None


class TicketOptions(AvroRecord):
    """The account's ticket-creation options."""

    no_new_tickets: bool = False
    create_user_from_local_part: bool = False
    create_location_from_domain: bool = False
    fallback_user: str | None = None
    auto_bundle: bool = True
    auto_answer_template: str | None = None
    resource: str | None = None
    category: str | None = None
    priority: str | None = None


class Attachment(AvroRecord):
    """One attachment or inline part of a classified mail, measured but not decoded."""

    part: str
    filename: str | None = None
    content_type: str
    size: Long
    content_id: str | None = None
    inline: bool = False
    unpacked_from: str | None = None


class MailRaw(AvroRecord):
    """A value of ``mail.raw``: one mail as the fetcher read it."""

    account_id: str
    account_name: str
    protocol: Protocol
    source_id: str
    message_id: str | None = None
    poll_cycle: Long
    poll_interval_seconds: Int
    fetched_at: UtcTimestamp
    size: Long
    raw: bytes | None = None
    claim_check: ClaimCheck | None = None
    sender_identity: SenderIdentity
    ticket_options: TicketOptions


class MailClassified(AvroRecord):
    """A value of ``mail.classified``: the classifier's decision for one mail."""

    account_id: str
    source_id: str
    message_id: str | None = None
    poll_cycle: Long
    fetched_at: UtcTimestamp
    decision: Decision
    rules_fired: tuple[str, ...]
    reason: str | None = None
    sender: str
    sender_name: str | None = None
    subject: str
    bundle_key: str | None = None
    ticket_reference: str | None = None
    body_text: str
    raw_sha256: str
    sender_identity: SenderIdentity
    ticket_options: TicketOptions
    # Since v2 of the schema; every field has a default, so v1 records still read.
    # Lists, not tuples, so the defaults equal the schema's ([] in Avro JSON).
    body_html: str | None = None
    body_truncated: bool = False
    attachments: list[Attachment] = []
    priority: str | None = None
    in_reply_to: str | None = None
    references: list[str] = []
    from_addresses: list[str] = []
    auto_submitted: bool = False
    bulk: bool = False
    loop: bool = False
    bounce: bool = False
    suppress_auto_answer: bool = False
    bounce_original_message_id: str | None = None
    bounce_status: str | None = None
    parse_defects: list[str] = []


class TicketEvent(AvroRecord):
    """A value of ``ticket.events``: one effect the ticketer committed."""

    event_id: str
    kind: TicketEventKind
    occurred_at: UtcTimestamp
    account_id: str
    source_id: str
    ticket_number: Long | None = None
    subject: str | None = None
    reason: str | None = None


class DeadLetter(AvroRecord):
    """A value of ``mail.dlq``: a record a service could not process."""

    service: str
    source_topic: str
    source_partition: Int
    source_offset: Long
    reason: str
    exception_type: str
    failed_at: UtcTimestamp
    original_key: bytes | None = None
    original_value: bytes | None = None
    claim_check_sha256: str | None = None


class DlqReplay(AvroRecord):
    """A value of ``mail.dlq.replays``: one dead letter that ``mailintake dlq replay`` produced again."""

    dlq_partition: Int
    dlq_offset: Long
    service: str
    source_topic: str
    source_partition: Int
    source_offset: Long
    to_topic: str
    reason: str
    replayed_at: UtcTimestamp


class AccountNotice(AvroRecord):
    """A value of ``accounts``: an account was created, changed or deleted in PostgreSQL."""

    account_id: str
    deleted: bool = False
    changed_at: UtcTimestamp


TopicRecord = MailRaw | MailClassified | TicketEvent | DeadLetter | DlqReplay | AccountNotice

RECORD_TYPES: Mapping[str, type[TopicRecord]] = {
    "mail.raw": MailRaw,
    "mail.classified": MailClassified,
    "ticket.events": TicketEvent,
    "mail.dlq": DeadLetter,
    "mail.dlq.replays": DlqReplay,
    "accounts": AccountNotice,
}
"""The typed record of each topic's values."""


def record_type(topic_name: str) -> type[TopicRecord]:
    try:
        return RECORD_TYPES[topic_name]
    except KeyError:
        raise KeyError(f"no record type for topic {topic_name!r}; known: {', '.join(RECORD_TYPES)}") from None


def encode_record(topic_name: str, record: TopicRecord) -> bytes:
    """Encode a typed record as a value of ``topic_name``; ``TypeError`` if it is not that topic's type."""
    return record_encoder(topic_name)(record)


def record_encoder(topic_name: str) -> Callable[[TopicRecord], bytes]:
    """:func:`encode_record` for a batch of records of one topic.

    The codec is looked up once: the lookup reads the environment (schemas folder,
    registry) and cost ~12 us a record, half as much as the encoding. It keeps the
    environment of the moment it was made, so take one per batch or per stream processor,
    not one for the whole program.
    """
    expected, codec = record_type(topic_name), codec_for(topic_name)

    def encode(record: TopicRecord) -> bytes:
        if not isinstance(record, expected):
            raise TypeError(f"{topic_name} carries {expected.__name__}, not {type(record).__name__}")
        # The model has checked every field already; the codec skips its own field-by-field check.
        # model_dump (pydantic-core) costs a quarter of to_avro's walk, and fastavro writes
        # the same bytes from it: a StrEnum member is its symbol, a tuple an array.
        return codec.encode_valid(record.model_dump())

    return encode


def decode_record(topic_name: str, data: bytes) -> TopicRecord:
    """Decode a value of ``topic_name`` into its typed record; ``InvalidMessage`` if it is none."""
    return record_decoder(topic_name)(data)


def record_decoder(topic_name: str) -> Callable[[bytes], TopicRecord]:
    """:func:`decode_record` for a batch of values of one topic.

    Like :func:`record_encoder`, it looks the codec up once: per record, that look-up
    was a quarter of the ticketer's decoding.
    """
    expected, codec = record_type(topic_name), codec_for(topic_name)

    def decode(data: bytes) -> TopicRecord:
        datum = codec.decode(data)
        try:
            return expected.from_avro(datum)
        except ValidationError as error:
            reason = f"decoded record does not fit {expected.__name__}: {error}"
            raise InvalidMessage(reason, topic=topic_name) from None

    return decode
