"""Each execution of a prepared look-up is planned for its parameters, so a look-up by
array keeps to its index as its table grows from empty."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import Text, column, func, select, table, text

from mailintake.database import engine_for
from mailintake.database.array_parameters import in_array

pytestmark = pytest.mark.stack

LOOKUPS = 15
"""Executions of one look-up: psycopg prepares it at the fifth, and PostgreSQL, left to
itself, turns to a generic plan after five custom ones of the prepared statement."""


# The users table's shape: its look-up by sender goes through an index on lower(email).
PROBE_TABLE = "CREATE TEMPORARY TABLE plan_probe (email text); CREATE UNIQUE INDEX ON plan_probe (lower(email))"


def _senders(n: int) -> list[str]:
    # As many as a batch brings: a custom plan's cost grows with the array, a generic
    # plan's does not, which is what makes PostgreSQL prefer the generic one.
    return [f"user{n}-{i}@x.example" for i in range(300)]


def _plans_of_the_lookup(connection) -> tuple[int, int]:
    row = connection.execute(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%plan_probe%'"
    ).fetchone()
    assert row is not None, "the look-up was never prepared"
    return row


def test_the_services_connections_plan_each_execution(stack):
    with engine_for(stack.database_url).connect() as connection:
        assert connection.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"
        connection.rollback()  # a session setting that a pool's rollback must not undo
        assert connection.scalar(text("SHOW plan_cache_mode")) == "force_custom_plan"


def test_a_lookup_by_array_is_never_given_a_generic_plan(stack):
    probe = table("plan_probe", column("email", Text))
    with engine_for(stack.database_url).connect() as connection:
        connection.execute(text(PROBE_TABLE))
        for n in range(LOOKUPS):
            connection.execute(select(probe.c.email).where(in_array(func.lower(probe.c.email), _senders(n), Text))).all()
        generic, custom = _plans_of_the_lookup(connection.connection.dbapi_connection)
        connection.rollback()
    assert generic == 0
    assert custom >= LOOKUPS - 5


def test_without_the_setting_postgresql_turns_to_a_generic_plan(stack):
    """The control: the counters above do see generic plans where they are made."""
    url = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as connection:
        connection.execute(PROBE_TABLE)
        for n in range(LOOKUPS):
            connection.execute("SELECT email FROM plan_probe WHERE lower(email) = ANY(%s)", (_senders(n),)).fetchall()
        generic, _custom = _plans_of_the_lookup(connection)
    assert generic > 0
