"""Bulk writes with PostgreSQL's ``COPY ... FROM STDIN`` inside a SQLAlchemy transaction.

An ``executemany`` of 500 rows costs SQLAlchemy and psycopg about 60-80 us of Python
per row (parameter processing, one statement per row in the pipeline); ``COPY`` costs
about 15 us and one stream (``bench/ticketer_throughput.py``'s notes in BENCHMARKS.md).
The rows go into the transaction of the given connection, so they commit or roll back
with everything else in it. Errors come back as SQLAlchemy's :class:`DBAPIError`
(``IntegrityError`` for a unique violation, with the psycopg error as ``orig``), as an
``INSERT`` through SQLAlchemy would raise them.

The rows go in COPY's binary format, each value by the binary dumper of its column's
type. The text format escapes every field on the way out and the server parses it again:
for a row of a 4 KB mail body ~6.6 us of the client's CPU and ~22 us of the server's,
against ~2.5 us and ~15 us in binary (``bench/postgres_body_writes.py``).

``COPY`` has no ``ON CONFLICT`` and no ``RETURNING``: it is for plain inserts whose
conflicts are errors. Server-side column defaults apply to the columns left out;
SQLAlchemy's client-side defaults do not, so tables written this way keep theirs on
the server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from sqlalchemy import Column, Connection, Dialect, Table
from sqlalchemy.dialects.postgresql import JSON, JSONB
from sqlalchemy.exc import DBAPIError


def _type_name(column: Column, dialect: Dialect) -> str:
    """The PostgreSQL type of ``column`` as psycopg names it: ``VARCHAR(200)`` is ``varchar``."""
    return re.sub(r"\(.*?\)", "", column.type.compile(dialect=dialect)).strip().lower()


def copy_rows(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys, each a column of ``table``) with one ``COPY``."""
    if not rows:
        return
    names = list(rows[0])
    unknown = [name for name in names if name not in table.columns]
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(unknown)}")
    as_json = [isinstance(table.columns[name].type, JSON | JSONB) for name in names]
    types = [_type_name(table.columns[name], connection.dialect) for name in names]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in names)
    )
    driver_connection = connection.connection.driver_connection
    assert isinstance(driver_connection, psycopg.Connection), "copy_rows needs the psycopg (3) driver"
    cursor = driver_connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                values = [Jsonb(row[name]) if json and row[name] is not None else row[name] for name, json in zip(names, as_json)]
                try:
                    copy.write_row(values)
                except (TypeError, ValueError, OverflowError) as error:
                    # The binary dumpers refuse a value of the wrong type here, before the
                    # server sees it; raised as the server's refusal would be, a DataError.
                    columns = ", ".join(f"{name} {type_name}" for name, type_name in zip(names, types))
                    raise psycopg.DataError(f"a value does not fit its column ({columns}): {error}") from error
    except psycopg.Error as error:
        disconnected = connection.dialect.is_disconnect(error, driver_connection, cursor)
        raise DBAPIError.instance(
            statement.as_string(driver_connection),
            None,
            error,
            psycopg.Error,
            connection_invalidated=disconnected,
            dialect=connection.dialect,
        ) from error
    finally:
        cursor.close()
