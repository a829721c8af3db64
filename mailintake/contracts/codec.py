"""Encoding and decoding topic values in the Confluent wire format."""

from __future__ import annotations

import functools
import io
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import fastavro
from avro.schema import Schema
from fastavro.read import SchemaResolutionError

from mailintake.contracts.avsc import parse_schema, same_schema
from mailintake.contracts.compatibility import read_problems
from mailintake.contracts.datum import DatumForm, conform
from mailintake.contracts.errors import InvalidMessage, UnknownSchemaId
from mailintake.contracts.registry import SchemaRegistry, default_registry
from mailintake.contracts.topics import Topic, get_topic, resolved_schemas_dir
from mailintake.contracts.wire import FramingError, frame, unframe

# What fastavro's reader raises on bytes that are not a record of the writer schema:
# short reads (EOFError), invalid UTF-8 and bad lengths (ValueError), union and enum
# indexes out of range (IndexError), timestamps beyond datetime's range (OverflowError),
# a writer's enum symbol the reader lacks (SchemaResolutionError).
_BODY_ERRORS = (
    SchemaResolutionError,
    ValueError,
    OverflowError,
    struct.error,
    EOFError,
    IndexError,
)
# What fastavro's writer raises on a datum that does not fit the schema.
_WRITE_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError)


def _parsed(text: str) -> Any:
    """A schema's text parsed for fastavro (the ``avro`` package has already checked it)."""
    return fastavro.parse_schema(json.loads(text))


class TopicCodec:
    """Turns one topic's records (Avro datums as dicts) into wire bytes and back.

    Encoding writes the topic's current ``.avsc`` under the id the registry gives
    it. Decoding reads the writer schema named by the id in the frame, whichever
    registered version that is, and resolves the record to the current schema.

    The ``avro`` package parses the schemas and checks that the current one can
    read each writer's; the bytes themselves are written and read with ``fastavro``
    (C-accelerated, several times faster than ``avro``'s pure-Python datum reader
    and writer), with the same binary encoding.
    """

    def __init__(self, topic: Topic, registry: SchemaRegistry) -> None:
        self.topic = topic
        self.registry = registry
        text = topic.schema_path.read_text(encoding="utf-8")
        self.schema: Schema = parse_schema(text, topic.schema_path.name)
        self._fast_schema = _parsed(text)
        self._schema_id: int | None = None
        # Per writer schema id: the parsed writer schema for fastavro, and the reader
        # schema to resolve to (None when the writer is the current schema itself).
        self._writers: dict[int, tuple[Any, Any]] = {}

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
        return self._write(datum)

    def encode_valid(self, datum: Mapping[str, Any]) -> bytes:
        """Frame a datum already known to fit the schema, without checking it field by field.

        For the typed records' ``to_avro()``: the pydantic model has already checked
        every field, and fastavro's writer does not validate (it would, say, write the
        string ``'yes'`` as ``true``). Should the writer fail anyway, the datum goes
        through ``encode``, so the error names the field.
        """
        try:
            return self._write(datum)
        except _WRITE_ERRORS:
            return self.encode(datum)

    def _write(self, datum: Mapping[str, Any]) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, self._fast_schema, datum)
        return frame(self.schema_id, buffer.getvalue())

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record in ``data``, in the current schema's shape; ``InvalidMessage`` if it has none."""
        try:
            schema_id, body = unframe(data)
        except FramingError as error:
            raise InvalidMessage(str(error), topic=self.topic.name) from None
        writer_schema, reader_schema = self._writer_schema(schema_id)
        buffer = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(buffer, writer_schema, reader_schema)
        except _BODY_ERRORS as error:
            reason = f"body is not a record of schema id {schema_id}: {type(error).__name__}: {error}"
            raise InvalidMessage(reason, topic=self.topic.name) from None
        left_over = len(body) - buffer.tell()
        if left_over:
            reason = f"{left_over} bytes left over after the record of schema id {schema_id}"
            raise InvalidMessage(reason, topic=self.topic.name)
        # The top-level schema is a record, so fastavro hands back a dict.
        return cast(dict[str, Any], record)

    def _writer_schema(self, schema_id: int) -> tuple[Any, Any]:
        """The fastavro writer and reader schemas for values written with ``schema_id``."""
        cached = self._writers.get(schema_id)
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
        if same_schema(registered.schema, self.schema):
            # No resolution needed; fastavro then reads with the writer schema alone.
            entry = (self._fast_schema, None)
        else:
            entry = (_parsed(registered.text), self._fast_schema)
        self._writers[schema_id] = entry
        return entry


@functools.cache
def _codec(topic_name: str, folder: Path, registry: SchemaRegistry) -> TopicCodec:
    return TopicCodec(get_topic(topic_name, folder), registry)


def codec_for(topic_name: str) -> TopicCodec:
    """The shared codec of a topic, for the configured schemas folder and registry."""
    return _codec(topic_name, resolved_schemas_dir(), default_registry())


def encode(topic_name: str, record: Mapping[str, Any]) -> bytes:
    """Encode ``record`` as a value of ``topic_name`` (see ``TopicCodec.encode``)."""
    return codec_for(topic_name).encode(record)


def decode(topic_name: str, data: bytes) -> dict[str, Any]:
    """Decode a value of ``topic_name`` (see ``TopicCodec.decode``)."""
    return codec_for(topic_name).decode(data)
