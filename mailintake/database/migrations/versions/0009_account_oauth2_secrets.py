"""Accounts: the OAuth2 secrets (client secret, refresh token), encrypted like the password.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("oauth2_secrets_ciphertext", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "oauth2_secrets_ciphertext")
