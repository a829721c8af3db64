"""Reference data a new ticket names: resources (who gets it as a new order), categories
and priorities; and the check that an account's ticket options name only what exists.

Account import and the admin API call :func:`missing_reference_data` before they store
an account, so a misspelt resource or fallback user fails there, with the field named,
rather than on the first mail. The rows come from a YAML file
(``mailintake refdata import FILE``)::

    resources:
      - name: 1st-level
        description: First-level support desk
    categories:
      - name: Hardware
    priorities:
      - name: normal
        description: Answer within one working day
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert

from mailintake.contracts.records import TicketOptions
from services.ticketer.tables import Category, Priority, Resource, User

KINDS = {"resources": Resource, "categories": Category, "priorities": Priority}
"""The reference-data tables by their name in the YAML file."""


class InvalidReferenceData(ValueError):
    """The reference-data file cannot be read; the message says where and why."""


class ReferenceEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    description: str | None = None


class ReferenceData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    resources: tuple[ReferenceEntry, ...] = ()
    categories: tuple[ReferenceEntry, ...] = ()
    priorities: tuple[ReferenceEntry, ...] = ()


def missing_reference_data(options: TicketOptions, fallback_user: str | None, connection: Connection) -> list[str]:
    """Messages naming each field of ``options`` (and the fallback user) whose value does
    not exist; empty when everything named exists. Unset fields are fine."""
    problems = []
    for field, table in (("resource", Resource), ("category", Category), ("priority", Priority)):
        value = getattr(options, field)
        if value is not None and connection.scalar(select(func.count()).select_from(table).where(table.name == value)) == 0:
            problems.append(f"ticket_options.{field}: {field} '{value}' does not exist (known: {_known(connection, table)})")
    if fallback_user is not None and connection.scalar(select(func.count()).select_from(User).where(User.login == fallback_user)) == 0:
        problems.append(f"ticket_options.fallback_user: no user has the login '{fallback_user}'")
    return problems


def _known(connection: Connection, table: type) -> str:
    names = list(connection.scalars(select(table.name).order_by(table.name).limit(20)))
    return ", ".join(names) if names else "none; import them with `mailintake refdata import`"


def parse_reference_data(path: Path) -> ReferenceData:
    """Read and check a reference-data YAML file; :class:`InvalidReferenceData` says what is wrong."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InvalidReferenceData(f"{path}: {error}") from None
    try:
        parsed = ReferenceData.model_validate(data or {})
    except ValidationError as error:
        raise InvalidReferenceData(f"{path}: {error}") from None
    for kind in KINDS:
        names = [entry.name for entry in getattr(parsed, kind)]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise InvalidReferenceData(f"{path}: {kind} named twice: {', '.join(duplicates)}")
    return parsed


def import_reference_data(connection: Connection, data: ReferenceData) -> dict[str, int]:
    """Insert the entries of ``data``, or update the description of those that exist.

    Nothing is deleted: tickets and accounts may still name an entry the file left out.
    Returns how many entries of each kind the file held.
    """
    counts = {}
    for kind, table in KINDS.items():
        entries = getattr(data, kind)
        for entry in entries:
            statement = insert(table).values(name=entry.name, description=entry.description)
            connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["name"], set_={"description": statement.excluded.description}
                )
            )
        counts[kind] = len(entries)
    return counts


def list_reference_data(connection: Connection) -> dict[str, list[tuple[str, str | None]]]:
    """Every entry by kind, as (name, description), sorted by name."""
    return {
        kind: [(row.name, row.description) for row in connection.execute(select(table.name, table.description).order_by(table.name))]
        for kind, table in KINDS.items()
    }
