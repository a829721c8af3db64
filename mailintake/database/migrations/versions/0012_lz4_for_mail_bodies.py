"""Mail bodies and stored raw mails compressed with lz4 rather than pglz, where the server has lz4.

PostgreSQL compresses a value once its row passes ~2 KB, with pglz unless the column says
otherwise. A mail's body is that large, and pglz cost the server's backend ~60 us of CPU
per 4 KB body written, against ~22 us with lz4 (``bench/postgres_body_writes.py``),
for about 40 % more space on those bodies. The database server's CPU is what the ticketer
waits on; its disk is cheaper. Values already stored keep their compression; new ones get lz4.

lz4 needs PostgreSQL 14 or newer built with it (Debian's packages and the PostgreSQL
project's are). On a server without it the columns stay as they are, and the migration
says so in the log.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

import logging

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

COLUMNS = (
    ("ticket_steps", "body_text"),
    ("outbound_mails", "body_text"),
    ("claim_checks", "content"),
)


def _server_has_lz4() -> bool:
    # The setting's allowed values name every compression method the server was built with;
    # before PostgreSQL 14 the setting does not exist.
    allowed = op.get_bind().exec_driver_sql(
        "SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'"
    ).scalar()
    return bool(allowed) and "lz4" in allowed


def upgrade() -> None:
    if not _server_has_lz4():
        logging.getLogger("alembic.runtime.migration").warning(
            "PostgreSQL has no lz4 compression (it needs version 14 or newer, built with lz4): "
            "mail bodies stay compressed with pglz, which costs the server more CPU per mail"
        )
        return
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    if not _server_has_lz4():
        return
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION default")
