"""Numbered logins handed out from a counter per base login.

A user created from a mail's sender gets the address's local part as login, or, if that
is taken, the next numbered one (``info``, ``info-2``, ``info-3`` ...). The next number
was found by reading every login of the base and trying candidates from 2 upwards: one
look-up and one INSERT per sender, each reading all the base's logins, so the n-th
``info@`` sender from another domain cost O(n), and with a collation other than C
(most managed PostgreSQL services) the ``LIKE`` scanned the whole users table.

``login_suffixes`` holds the last number handed out per base. A batch claims as many
numbers per base as it needs in one statement, whatever the number of senders. The
counters start from the numbered logins already stored (suffixes of up to nine
digits; a longer one is left to the unique index, which still decides).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_suffixes",
        sa.Column("base", sa.String(255), nullable=False),
        sa.Column("last_suffix", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("base", name="pk_login_suffixes"),
    )
    op.execute(
        """
        INSERT INTO login_suffixes (base, last_suffix)
        SELECT substring(login FROM '^(.+)-[0-9]{1,9}$'), max(substring(login FROM '-([0-9]{1,9})$')::bigint)
        FROM users
        WHERE login ~ '^.+-[0-9]{1,9}$'
        GROUP BY 1
        """
    )


def downgrade() -> None:
    op.drop_table("login_suffixes")
