"""The PostgreSQL database all services share: one schema, one Alembic history.

Each service declares its own tables (``services/*/tables.py``) on :data:`Base`;
the migrations in ``migrations/`` are the only way the schema changes.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Engine, MetaData, create_engine
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
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
