"""The example messages of the topic yaml files, checked against their schemas.

Examples are written in yaml form (see ``mailintake.contracts.datum``):
``timestamp-millis`` fields are integers of milliseconds since the Unix epoch;
``bytes`` fields are either a string, meaning its UTF-8 encoding, or a mapping
``{base64: <text>}``; enums are their symbol; a union value is written bare
(no ``{"string": ...}`` wrapper); fields left out take their schema default.
The ``key`` is a string, sent as UTF-8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from avro.schema import Schema

from mailintake.contracts.avsc import load_schema
from mailintake.contracts.datum import DatumForm, conform
from mailintake.contracts.topics import Example, Topic


@dataclass(frozen=True)
class ExampleMessage:
    """An example converted to what the codec takes: key bytes and an Avro datum."""

    topic: str
    name: str
    key: bytes
    value: dict[str, Any]


def conform_example(topic: Topic, index: int, example: Example, schema: Schema) -> ExampleMessage:
    """Check one example against ``schema``; ``SchemaMismatch`` names the yaml file and field."""
    where = f"{topic.yaml_path.name} example {index + 1} ({example.name})"
    value = conform(schema, example.value, form=DatumForm.YAML, where=where)
    return ExampleMessage(topic.name, example.name, example.key.encode("utf-8"), value)


def example_messages(topic: Topic, schema: Schema | None = None) -> list[ExampleMessage]:
    """Every example of ``topic``, checked against its current schema (or ``schema``)."""
    schema = schema or load_schema(topic.schema_path)
    return [conform_example(topic, i, example, schema) for i, example in enumerate(topic.examples)]
