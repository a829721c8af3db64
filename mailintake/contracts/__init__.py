"""Topic contracts of mailintake: schemas, topic settings, wire format and typed records.

Each topic has an Avro schema (``schemas/<topic>.avsc``) and a contract beside
it (``schemas/<topic>.yaml``); schema ids come from ``schemas/registry.yaml``
or a Confluent registry, and values travel in the Confluent wire format.
"""

from mailintake.contracts.codec import TopicCodec, codec_for, decode, encode
from mailintake.contracts.compatibility import CompatibilityMode, check_compatibility
from mailintake.contracts.consumers import CONSUMER_READERS, ConsumerReader, reader_for
from mailintake.contracts.errors import (
    ContractError,
    InvalidMessage,
    RegistryUnavailable,
    SchemaMismatch,
    UnknownSchemaId,
    UnregisteredSchema,
)
from mailintake.contracts.keys import key_text, record_key
from mailintake.contracts.records import (
    RECORD_TYPES,
    Attachment,
    AvroRecord,
    ClaimCheck,
    DeadLetter,
    Decision,
    DlqReplay,
    MailClassified,
    MailRaw,
    Protocol,
    SenderIdentity,
    TicketEvent,
    TicketEventKind,
    TicketOptions,
    TopicRecord,
    decode_record,
    encode_record,
    record_decoder,
    record_encoder,
    record_type,
)
from mailintake.contracts.registry import ConfluentRegistry, FileRegistry, SchemaRegistry, default_registry
from mailintake.contracts.topics import Topic, get_topic, load_topics, schemas_dir

__all__ = [
    "CONSUMER_READERS",
    "RECORD_TYPES",
    "Attachment",
    "AvroRecord",
    "ClaimCheck",
    "CompatibilityMode",
    "ConfluentRegistry",
    "ConsumerReader",
    "ContractError",
    "DeadLetter",
    "Decision",
    "DlqReplay",
    "FileRegistry",
    "InvalidMessage",
    "MailClassified",
    "MailRaw",
    "Protocol",
    "RegistryUnavailable",
    "SchemaMismatch",
    "SchemaRegistry",
    "SenderIdentity",
    "TicketEvent",
    "TicketEventKind",
    "TicketOptions",
    "Topic",
    "TopicCodec",
    "TopicRecord",
    "UnknownSchemaId",
    "UnregisteredSchema",
    "check_compatibility",
    "codec_for",
    "decode",
    "decode_record",
    "default_registry",
    "encode",
    "encode_record",
    "record_decoder",
    "record_encoder",
    "get_topic",
    "key_text",
    "load_topics",
    "reader_for",
    "record_key",
    "record_type",
    "schemas_dir",
]
