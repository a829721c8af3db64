"""Schema evolution rules, checked with Avro's own reader/writer resolution."""

from __future__ import annotations

from enum import StrEnum

from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import Schema


class CompatibilityMode(StrEnum):
    """The Confluent compatibility modes a topic may declare (non-transitive)."""

    BACKWARD = "BACKWARD"
    """Consumers on the new schema can read data written with the previous one."""
    FORWARD = "FORWARD"
    """Consumers still on the previous schema can read data written with the new one."""
    FULL = "FULL"
    """Both BACKWARD and FORWARD."""


def read_problems(reader: Schema, writer: Schema, direction: str = "reader cannot read writer") -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``; empty if it can."""
    # A fresh checker per pair: it memoises by id(), which a schema parsed later
    # may reuse once an earlier one is freed.
    result = ReaderWriterCompatibilityChecker().get_compatibility(reader, writer)
    if result.compatibility is SchemaCompatibilityType.compatible:
        return []
    # Avro reports what is wrong as kinds ("reader_field_missing_default_value"),
    # subjects ("folder") and JSON-pointer locations; "/" is only the root.
    kinds = ", ".join(sorted({i.value.replace("_", " ") for i in result.incompatibilities}))
    subjects = ", ".join(sorted(result.messages))
    locations = ", ".join(sorted(loc for loc in result.locations if loc != "/")) or "/"
    return [f"{direction}: {kinds}: {subjects} (at {locations})"]


def check_compatibility(previous: Schema, current: Schema, mode: CompatibilityMode) -> list[str]:
    """Return why ``current`` may not follow ``previous`` under ``mode``; empty if it may."""
    problems: list[str] = []
    if mode in (CompatibilityMode.BACKWARD, CompatibilityMode.FULL):
        problems += read_problems(current, previous, "new schema cannot read data of the previous one")
    if mode in (CompatibilityMode.FORWARD, CompatibilityMode.FULL):
        problems += read_problems(previous, current, "previous schema cannot read data of the new one")
    return problems
