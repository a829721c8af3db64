"""The PostgreSQL database all services share: one schema, one Alembic history.

Each service declares its own tables (``services/*/tables.py``) on :data:`Base`;
the migrations in ``migrations/`` are the only way the schema changes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from psycopg.types.array import ListBinaryDumper
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase

# Deterministic constraint names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


@cache
def engine_for(url: str) -> Engine:
    """One pooled engine per URL per process."""
    # pool_pre_ping: a PostgreSQL restart must not surface as a failed first statement.
    engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    event.listen(engine, "connect", _send_lists_as_binary_arrays)
    return engine


def _send_lists_as_binary_arrays(dbapi_connection: Any, _record: Any) -> None:
    """List parameters go to PostgreSQL as binary arrays.

    psycopg sends a list as a text array by default, quoting and escaping every element
    in Python: ~6 us an element for a bundle key (a JSON array, full of quotes), against
    ~0.2 us in binary; the ticketer looks up each batch's keys, senders and mails by array.
    COPY (``bulk_copy``) is unaffected: it takes its dumpers from the columns' types.
    """
    dbapi_connection.adapters.register_dumper(list, ListBinaryDumper)
