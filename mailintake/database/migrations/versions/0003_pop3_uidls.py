"""POP3: the UIDLs already produced per account.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pop3_uidls",
        sa.Column("account_id", sa.String(100), nullable=False),
        sa.Column("uidl", sa.String(200), nullable=False),
        sa.Column("produced_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "uidl", name="pk_pop3_uidls"),
    )


def downgrade() -> None:
    op.drop_table("pop3_uidls")
