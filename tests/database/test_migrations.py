"""The Alembic migrations and the table models describe the same schema."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from mailintake.database import Base, engine_for
from mailintake.database.migrate import alembic_config, current_revision

pytestmark = pytest.mark.stack


def test_migrated_database_matches_the_models(stack):
    # env.py imports every table module, so Base.metadata is complete after this import.
    from alembic.script import ScriptDirectory

    import mailintake.claim_check  # noqa: F401
    import services.admin.tables  # noqa: F401
    import services.fetcher.tables  # noqa: F401
    import services.ticketer.tables  # noqa: F401

    head = ScriptDirectory.from_config(alembic_config(stack.database_url)).get_current_head()
    assert current_revision(stack.database_url) == head
    with engine_for(stack.database_url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == [], f"models and migrations differ; write a migration: {differences}"
