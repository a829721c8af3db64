"""The Confluent wire format, so that standard Kafka tools can read our topics.

A value is one magic byte (0), the schema id as a 4-byte big-endian unsigned
integer, then the record in Avro binary encoding.
"""

from __future__ import annotations

import struct

MAGIC_BYTE = 0
HEADER = struct.Struct(">BI")
HEADER_SIZE = HEADER.size


class FramingError(ValueError):
    """The bytes do not start with a Confluent wire-format header."""


def frame(schema_id: int, body: bytes) -> bytes:
    """Prefix an Avro binary ``body`` with the header for ``schema_id``."""
    return HEADER.pack(MAGIC_BYTE, schema_id) + body


def unframe(data: bytes) -> tuple[int, bytes]:
    """Split a framed value into its schema id and Avro body."""
    if len(data) < HEADER_SIZE:
        raise FramingError(f"{len(data)} bytes is shorter than the {HEADER_SIZE}-byte wire-format header")
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise FramingError(f"magic byte is {data[0]:#04x}, expected {MAGIC_BYTE:#04x}")
    return schema_id, bytes(data[HEADER_SIZE:])
