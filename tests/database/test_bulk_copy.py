"""copy_rows on the stack's PostgreSQL: rows (in COPY's binary format), JSONB and server
defaults arrive; a conflict is SQLAlchemy's IntegrityError and rolls the whole transaction
back; a value of the wrong type is a DBAPIError too."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors
from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Text, func, insert, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import DBAPIError, IntegrityError

from mailintake.database import engine_for
from mailintake.database.bulk_copy import copy_rows

pytestmark = pytest.mark.stack


@pytest.fixture
def table(stack, unique):
    metadata = MetaData()
    table = Table(
        f"copy_rows_{unique}",
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("name", Text, unique=True),
        Column("payload", JSONB),
        Column("created_at", DateTime(timezone=True), server_default=func.now()),
    )
    engine = engine_for(stack.database_url)
    metadata.create_all(engine)
    yield engine, table
    metadata.drop_all(engine)


def test_rows_arrive_with_json_text_nulls_and_server_defaults(table):
    engine, t = table
    rows = [
        {"id": 1, "name": "tab\there, new\nline, back\\slash", "payload": [{"kind": "TICKET_CREATED", "n": 1}]},
        {"id": 2, "name": None, "payload": None},
        {"id": 3, "name": "Grüße", "payload": {"quote": "\"x\""}},
    ]
    with engine.begin() as connection:
        copy_rows(connection, t, rows)
    with engine.connect() as connection:
        stored = connection.execute(select(t).order_by(t.c.id)).all()
    assert [(r.id, r.name, r.payload) for r in stored] == [(r["id"], r["name"], r["payload"]) for r in rows]
    assert all(r.created_at is not None for r in stored)


def test_a_conflict_is_an_integrity_error_and_nothing_of_the_transaction_stays(table):
    engine, t = table
    with engine.begin() as connection:
        copy_rows(connection, t, [{"id": 1, "name": "first", "payload": None}])
    with pytest.raises(IntegrityError) as raised:
        with engine.begin() as connection:
            connection.execute(insert(t).values(id=10, name="in the same transaction"))
            copy_rows(connection, t, [{"id": 2, "name": "second", "payload": None}, {"id": 1, "name": "again", "payload": None}])
    assert isinstance(raised.value.orig, pg_errors.UniqueViolation)
    with engine.connect() as connection:
        assert connection.execute(select(t.c.id).order_by(t.c.id)).scalars().all() == [1]
    # The pooled connection is usable afterwards.
    with engine.begin() as connection:
        copy_rows(connection, t, [{"id": 2, "name": "second", "payload": None}])
    with engine.connect() as connection:
        assert connection.execute(select(t.c.id).order_by(t.c.id)).scalars().all() == [1, 2]


def test_an_unknown_column_is_named_and_no_rows_is_nothing(table):
    engine, t = table
    with engine.begin() as connection:
        with pytest.raises(ValueError, match=f"{t.name} has no column colour"):
            copy_rows(connection, t, [{"id": 1, "colour": "red"}])
        copy_rows(connection, t, [])
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(t)).scalar() == 0


def test_rows_go_in_copys_binary_format(table, monkeypatch):
    engine, t = table
    statements = []
    real_copy = psycopg.Cursor.copy

    def recording_copy(cursor, statement, *args, **kwargs):  # noqa: ANN001, ANN202
        statements.append(statement.as_string(cursor.connection))
        return real_copy(cursor, statement, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "copy", recording_copy)
    with engine.begin() as connection:
        copy_rows(connection, t, [{"id": 1, "name": "one", "payload": {"n": 1}}])
    assert len(statements) == 1 and statements[0].endswith("FROM STDIN (FORMAT BINARY)")


def test_a_value_of_the_wrong_type_is_a_data_error_naming_the_statement(table):
    engine, t = table
    with pytest.raises(DBAPIError, match="COPY") as raised:
        with engine.begin() as connection:
            copy_rows(connection, t, [{"id": "not a number", "name": "x", "payload": None}])
    assert isinstance(raised.value.orig, psycopg.DataError)
