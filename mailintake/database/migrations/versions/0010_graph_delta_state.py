"""Microsoft Graph: the message ids already produced and the last complete round's deltaLink, per account and folder.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "graph_produced_messages",
        sa.Column("account_id", sa.String(100), nullable=False),
        sa.Column("folder", sa.String(500), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("produced_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "folder", "message_id", name="pk_graph_produced_messages"),
    )
    op.create_table(
        "graph_delta_links",
        sa.Column("account_id", sa.String(100), nullable=False),
        sa.Column("folder", sa.String(500), nullable=False),
        sa.Column("folder_id", sa.Text(), nullable=False),
        sa.Column("delta_link", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "folder", name="pk_graph_delta_links"),
    )


def downgrade() -> None:
    op.drop_table("graph_delta_links")
    op.drop_table("graph_produced_messages")
