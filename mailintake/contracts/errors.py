"""Errors raised by the topic contracts."""

from __future__ import annotations


class ContractError(Exception):
    """Base of every error the contracts package raises on purpose."""


class SchemaMismatch(ContractError, ValueError):
    """A value does not fit a topic's Avro schema.

    ``where`` names the topic or the yaml file the value came from, ``field`` the
    dotted path of the offending field (empty for the record itself).
    """

    def __init__(self, where: str, field: str, reason: str) -> None:
        self.where = where
        self.field = field
        self.reason = reason
        place = f"field {field}" if field else "record"
        super().__init__(f"{where}: {place}: {reason}")


class InvalidMessage(ContractError, ValueError):
    """A record that can never be processed: bytes that are not a value of their
    topic, or (raised by services) a decoded record they cannot handle.

    ``topic`` is set when the contracts raise it while decoding.
    """

    def __init__(self, reason: str, *, topic: str | None = None) -> None:
        self.reason = reason
        self.topic = topic
        super().__init__(f"invalid message on {topic}: {reason}" if topic else reason)


class UnregisteredSchema(ContractError, LookupError):
    """A schema has no id under its subject, so it cannot be written to the wire."""


class UnknownSchemaId(ContractError, LookupError):
    """The registry has no schema with the requested id."""


class RegistryUnavailable(ContractError):
    """The schema registry could not be asked (network or server error).

    Kept apart from ``UnknownSchemaId`` so that a registry outage is never taken
    for a bad message and dead-lettered.
    """
