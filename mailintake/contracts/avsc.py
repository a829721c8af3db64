"""Reading Avro schema files."""

from __future__ import annotations

import json
from pathlib import Path

import avro.errors
import avro.schema
from avro.schema import Schema

from mailintake.contracts.errors import ContractError


def parse_schema(text: str, source: str) -> Schema:
    """Parse Avro schema JSON; ``ContractError`` naming ``source`` if it is not one."""
    try:
        return avro.schema.parse(text)
    except (avro.errors.SchemaParseException, ValueError) as error:
        raise ContractError(f"{source}: not a valid Avro schema: {error}") from error


def load_schema(path: Path) -> Schema:
    return parse_schema(path.read_text(encoding="utf-8"), path.name)


def same_schema(a: Schema, b: Schema) -> bool:
    """Whether two parsed schemas are the same schema, docs included."""
    return json.dumps(a.to_json(), sort_keys=True) == json.dumps(b.to_json(), sort_keys=True)
