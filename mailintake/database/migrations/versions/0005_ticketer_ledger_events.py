"""The ticketer's ledger keeps the events it emitted, the raw mail's hash and poll cycle;
tickets are found by bundle key and opening poll cycle.

The ledger row now holds every ticket event a mail caused (ids and timestamps included),
so a replay re-emits exactly the same events, and ``raw_sha256`` keeps the original of a
rejected mail reachable. The index serves the bundle look-up on a cache miss.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("processed_mails", sa.Column("events", postgresql.JSONB(), nullable=True))
    op.add_column("processed_mails", sa.Column("raw_sha256", sa.String(64), nullable=True))
    op.add_column("processed_mails", sa.Column("poll_cycle", sa.BigInteger(), nullable=True))
    op.add_column("processed_mails", sa.Column("bundle_key", sa.Text(), nullable=True))
    op.create_index(
        "ix_tickets_bundle_key_opening_poll_cycle",
        "tickets",
        ["bundle_key", "opening_poll_cycle"],
        postgresql_where=sa.text("bundle_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_tickets_bundle_key_opening_poll_cycle", table_name="tickets")
    for column in ("bundle_key", "poll_cycle", "raw_sha256", "events"):
        op.drop_column("processed_mails", column)
