"""Checking a value against an Avro schema, with the offending field's path in the error.

Avro's own ``validate`` names only the innermost field and says nothing about
unknown keys; a contract should say exactly which field of which record is
wrong, so values are walked here before Avro writes them.

Three forms of value are understood:

* ``PYTHON`` -- what ``avro.io.DatumWriter`` takes and ``DatumReader`` returns:
  ``timestamp-millis`` as a timezone-aware ``datetime``, ``bytes`` as ``bytes``.
* ``YAML`` -- the convention of the examples in the topic yaml files:
  ``timestamp-millis`` as an integer of milliseconds since the Unix epoch;
  ``bytes`` as a string (its UTF-8 encoding) or as ``{base64: <text>}``.
* ``AVRO_JSON`` -- schema field defaults as the Avro specification writes them
  (``bytes`` as a string of code points 0-255).

Whatever the form, the result is in ``PYTHON`` form, records carry every field
(missing ones take their schema default) and unknown fields are refused.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Mapping
from enum import Enum
from typing import Any, NoReturn

from avro import constants
from avro.schema import (
    ArraySchema,
    EnumSchema,
    FixedSchema,
    MapSchema,
    RecordSchema,
    Schema,
    UnionSchema,
)

from mailintake.contracts.errors import SchemaMismatch

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)


class DatumForm(Enum):
    PYTHON = "python"
    YAML = "yaml"
    AVRO_JSON = "avro-json"


def conform(schema: Schema, value: Any, *, form: DatumForm, where: str) -> Any:
    """Return ``value`` checked against ``schema`` and brought into ``PYTHON`` form.

    Raises ``SchemaMismatch`` naming ``where`` and the dotted path of the field.
    """
    return _Walk(form, where).conform(schema, value, "")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_name(schema: Schema) -> str:
    logical = getattr(schema, "logical_type", None)
    if logical:
        return f"{schema.type} ({logical})"
    return getattr(schema, "fullname", None) or schema.type


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but True is no poll cycle.
    return isinstance(value, int) and not isinstance(value, bool)


class _Walk:
    def __init__(self, form: DatumForm, where: str) -> None:
        self.form = form
        self.where = where

    def fail(self, path: str, reason: str) -> NoReturn:
        raise SchemaMismatch(self.where, path, reason)

    def conform(self, schema: Schema, value: Any, path: str) -> Any:
        kind = schema.type
        logical = getattr(schema, "logical_type", None)
        if logical and logical != constants.TIMESTAMP_MILLIS:
            self.fail(path, f"logical type {logical} is not supported by mailintake's contracts")
        if isinstance(schema, UnionSchema):
            return self.union(schema, value, path)
        if value is None and kind != "null":
            self.fail(path, f"required ({_type_name(schema)}), got null")
        if isinstance(schema, RecordSchema):
            return self.record(schema, value, path)
        if isinstance(schema, EnumSchema):
            if isinstance(value, Enum):
                value = value.value
            if not isinstance(value, str) or value not in schema.symbols:
                self.fail(path, f"expected one of {', '.join(schema.symbols)}, got {_describe(value)}")
            return value
        if isinstance(schema, ArraySchema):
            if not isinstance(value, (list, tuple)):
                self.fail(path, f"expected a list, got {_describe(value)}")
            return [self.conform(schema.items, item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(schema, MapSchema):
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                self.fail(path, f"expected a mapping with string keys, got {_describe(value)}")
            return {k: self.conform(schema.values, v, f"{path}[{k!r}]") for k, v in value.items()}
        if isinstance(schema, FixedSchema):
            data = self.bytes_value(value, path)
            if len(data) != schema.size:
                self.fail(path, f"expected {schema.size} bytes, got {len(data)}")
            return data
        if logical == constants.TIMESTAMP_MILLIS:
            return self.timestamp(value, path)
        if kind == "null":
            if value is not None:
                self.fail(path, f"expected null, got {_describe(value)}")
            return None
        if kind == "boolean":
            if not isinstance(value, bool):
                self.fail(path, f"expected boolean, got {_describe(value)}")
            return value
        if kind in ("int", "long"):
            low, high = INT_RANGE if kind == "int" else LONG_RANGE
            if not _is_int(value):
                self.fail(path, f"expected {kind}, got {_describe(value)}")
            if not low <= value <= high:
                self.fail(path, f"{value} is out of range for {kind}")
            return value
        if kind in ("float", "double"):
            if not (_is_int(value) or isinstance(value, float)):
                self.fail(path, f"expected {kind}, got {_describe(value)}")
            return float(value)
        if kind == "string":
            if not isinstance(value, str):
                self.fail(path, f"expected string, got {_describe(value)}")
            return value
        if kind == "bytes":
            return self.bytes_value(value, path)
        self.fail(path, f"schema type {kind} is not supported by mailintake's contracts")

    def record(self, schema: RecordSchema, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(path, f"expected a {schema.fullname} record (a mapping), got {_describe(value)}")
        names = [f.name for f in schema.fields]
        unknown = [k for k in value if k not in names]
        if unknown:
            self.fail(_join(path, str(unknown[0])), f"unknown field; {schema.fullname} has {', '.join(names)}")
        result: dict[str, Any] = {}
        for field in schema.fields:
            field_path = _join(path, field.name)
            if field.name in value:
                result[field.name] = self.conform(field.type, value[field.name], field_path)
            elif field.has_default:
                defaults = _Walk(DatumForm.AVRO_JSON, self.where)
                result[field.name] = defaults.conform(field.type, field.default, field_path)
            else:
                self.fail(field_path, "required field is missing")
        return result

    def union(self, schema: UnionSchema, value: Any, path: str) -> Any:
        branches = schema.schemas
        failures: list[SchemaMismatch] = []
        for branch in branches:
            try:
                return self.conform(branch, value, path)
            except SchemaMismatch as error:
                failures.append(error)
        # A value that got into one branch (say, a mapping into the one record
        # branch) is best explained by that branch's own, deeper complaint.
        deeper = [f for f in failures if len(f.field) > len(path)]
        if len(deeper) == 1:
            raise deeper[0]
        allowed = " | ".join(_type_name(b) for b in branches)
        if value is None:
            self.fail(path, f"required ({allowed}), got null")
        self.fail(path, f"expected {allowed}, got {_describe(value)}")

    def timestamp(self, value: Any, path: str) -> dt.datetime:
        if self.form is DatumForm.PYTHON:
            if not isinstance(value, dt.datetime) or value.utcoffset() is None:
                self.fail(path, f"expected a timezone-aware datetime (timestamp-millis), got {_describe(value)}")
            return value
        if not _is_int(value):
            self.fail(path, f"expected milliseconds since the epoch (timestamp-millis), got {_describe(value)}")
        try:
            return EPOCH + dt.timedelta(milliseconds=value)
        except OverflowError:
            self.fail(path, f"{value} ms since the epoch is beyond the dates Python can represent")

    def bytes_value(self, value: Any, path: str) -> bytes:
        if self.form is DatumForm.PYTHON:
            if not isinstance(value, (bytes, bytearray)):
                self.fail(path, f"expected bytes, got {_describe(value)}")
            return bytes(value)
        if self.form is DatumForm.AVRO_JSON:
            if not isinstance(value, str):
                self.fail(path, f"expected a string default for bytes, got {_describe(value)}")
            try:
                return value.encode("latin-1")
            except UnicodeEncodeError:
                self.fail(path, "a bytes default may only hold code points 0-255")
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, Mapping) and set(value) == {"base64"} and isinstance(value["base64"], str):
            try:
                return base64.b64decode(value["base64"], validate=True)
            except binascii.Error as error:
                self.fail(path, f"invalid base64: {error}")
        self.fail(path, f"expected bytes as a UTF-8 string or {{base64: ...}}, got {_describe(value)}")
