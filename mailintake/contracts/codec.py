"""Encoding and decoding topic values in the Confluent wire format."""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import avro.errors
from avro.io import BinaryDecoder, BinaryEncoder, DatumReader, DatumWriter
from avro.schema import Schema

from mailintake.contracts.avsc import load_schema
from mailintake.contracts.compatibility import read_problems
from mailintake.contracts.datum import DatumForm, conform
from mailintake.contracts.errors import InvalidMessage, UnknownSchemaId
from mailintake.contracts.registry import SchemaRegistry, default_registry
from mailintake.contracts.topics import Topic, get_topic, schemas_dir
from mailintake.contracts.wire import FramingError, frame, unframe

# What Avro's reader raises on bytes that are not a record of the writer schema:
# short reads, bad lengths and enum indexes (AvroException), invalid UTF-8
# (ValueError), timestamps beyond datetime's range (OverflowError).
_BODY_ERRORS = (avro.errors.AvroException, ValueError, OverflowError, struct.error, EOFError, IndexError)


class TopicCodec:
    """Turns one topic's records (Avro datums as dicts) into wire bytes and back.

    Encoding writes the topic's current ``.avsc`` under the id the registry gives
    it. Decoding reads the writer schema named by the id in the frame, whichever
    registered version that is, and resolves the record to the current schema.
    """

    def __init__(self, topic: Topic, registry: SchemaRegistry) -> None:
        self.topic = topic
        self.registry = registry
        self.schema: Schema = load_schema(topic.schema_path)
        self._schema_id: int | None = None
        self._writer_schemas: dict[int, Schema] = {}

    @property
    def schema_id(self) -> int:
        """The registry id of the current schema (looked up once, on first use)."""
        if self._schema_id is None:
            self._schema_id = self.registry.id_for(self.topic.subject, self.schema)
        return self._schema_id

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """Frame ``record`` as the topic's value; ``SchemaMismatch`` names the bad field.

        Fields left out take their schema default; unknown fields are refused.
        Timestamps are timezone-aware ``datetime`` objects, bytes are ``bytes``.
        """
        datum = conform(self.schema, record, form=DatumForm.PYTHON, where=self.topic.name)
        buffer = io.BytesIO()
        DatumWriter(self.schema).write(datum, BinaryEncoder(buffer))
        return frame(self.schema_id, buffer.getvalue())

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in ``data``, in the current schema's shape; ``InvalidMessage`` if it has none."""
        try:
            schema_id, body = unframe(data)
        except FramingError as error:
            raise InvalidMessage(str(error), topic=self.topic.name) from None
        writer_schema = self._writer_schema(schema_id)
        buffer = io.BytesIO(body)
        # A new DatumReader each time: it keeps per-read counters, and codecs are shared.
        reader = DatumReader(writer_schema, self.schema)
        try:
            record = reader.read(BinaryDecoder(buffer))
        except _BODY_ERRORS as error:
            reason = f"body is not a record of schema id {schema_id}: {type(error).__name__}: {error}"
            raise InvalidMessage(reason, topic=self.topic.name) from None
        left_over = len(body) - buffer.tell()
        if left_over:
            reason = f"{left_over} bytes left over after the record of schema id {schema_id}"
            raise InvalidMessage(reason, topic=self.topic.name)
        # The top-level schema is a record, so Avro hands back a dict.
        return cast(dict[str, Any], record)

    def _writer_schema(self, schema_id: int) -> Schema:
        cached = self._writer_schemas.get(schema_id)
        if cached is not None:
            return cached
        try:
            registered = self.registry.schema_by_id(schema_id)
        except UnknownSchemaId as error:
            raise InvalidMessage(str(error), topic=self.topic.name) from None
        if registered.subject is not None and registered.subject != self.topic.subject:
            reason = f"schema id {schema_id} is registered for {registered.subject}, not {self.topic.subject}"
            raise InvalidMessage(reason, topic=self.topic.name)
        problems = read_problems(self.schema, registered.schema)
        if problems:
            reason = f"the current schema cannot read schema id {schema_id}: {'; '.join(problems)}"
            raise InvalidMessage(reason, topic=self.topic.name)
        self._writer_schemas[schema_id] = registered.schema
        return registered.schema


@functools.cache
def _codec(topic_name: str, folder: Path, registry: SchemaRegistry) -> TopicCodec:
    return TopicCodec(get_topic(topic_name, folder), registry)


def codec_for(topic_name: str) -> TopicCodec:
    """The shared codec of a topic, for the configured schemas folder and registry."""
    return _codec(topic_name, schemas_dir().resolve(), default_registry())


def encode(topic_name: str, record: Mapping[str, Any]) -> bytes:
    """Encode ``record`` as a value of ``topic_name`` (see ``TopicCodec.encode``)."""
    return codec_for(topic_name).encode(record)


def decode(topic_name: str, data: bytes) -> dict[str, Any]:
    """Decode a value of ``topic_name`` (see ``TopicCodec.decode``)."""
    return codec_for(topic_name).decode(data)
