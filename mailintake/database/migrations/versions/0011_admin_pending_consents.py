"""Admin: consent flows ("Connect with Microsoft") between their start and the provider's answer.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_pending_consents",
        sa.Column("state", sa.String(100), nullable=False),
        sa.Column("session_sha256", sa.String(64), nullable=False),
        sa.Column("browser_sha256", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("account_id", sa.String(100), nullable=False),
        sa.Column("editing", sa.Boolean(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("state", name="pk_admin_pending_consents"),
    )
    op.create_index("ix_admin_pending_consents_expires_at", "admin_pending_consents", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_admin_pending_consents_expires_at", table_name="admin_pending_consents")
    op.drop_table("admin_pending_consents")
