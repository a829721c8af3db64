"""A PostgreSQL schema of its own, migrated to head, for tests that need a database no
other test writes to (the fetcher polls every stored account, the sender every queued mail)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from mailintake.database import engine_for
from mailintake.database.migrate import upgrade


@contextmanager
def migrated_schema(database_url: str, prefix: str, revision: str = "head") -> Iterator[str]:
    """The URL of a new schema (``search_path`` set on every connection), migrated to
    ``revision``, dropped afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with engine_for(database_url).begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{database_url}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url, revision)
        yield url
    finally:
        engine_for(url).dispose()
        with engine_for(database_url).begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
