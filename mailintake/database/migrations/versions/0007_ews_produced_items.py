"""EWS: the item ids already produced per account and folder.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ews_produced_items",
        sa.Column("account_id", sa.String(100), nullable=False),
        sa.Column("folder", sa.String(500), nullable=False),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("produced_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "folder", "item_id", name="pk_ews_produced_items"),
    )


def downgrade() -> None:
    op.drop_table("ews_produced_items")
