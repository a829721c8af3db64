"""Alembic environment: online migrations against the configured URL."""

from alembic import context
from sqlalchemy import create_engine, pool

from mailintake import claim_check as _claim_check  # noqa: F401 - registers its table on Base
from mailintake.database import Base
from services.admin import tables as _admin_tables  # noqa: F401 - registers tables on Base
from services.fetcher import tables as _fetcher_tables  # noqa: F401
from services.ticketer import tables as _ticketer_tables  # noqa: F401

config = context.config
url = config.get_main_option("sqlalchemy.url")
connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        # Two services starting at once must not both run the same migration.
        context.execute("SELECT pg_advisory_xact_lock(7236051)")
        context.run_migrations()
