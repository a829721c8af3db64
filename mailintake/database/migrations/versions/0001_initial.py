"""Initial schema: fetcher mailbox state, claim checks, tickets, steps and the processed-mail ledger.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_state",
        sa.Column("account_id", sa.String(200), nullable=False),
        sa.Column("folder", sa.String(500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("poll_cycle", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "folder", name="pk_mailbox_state"),
    )
    op.create_table(
        "claim_checks",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_claim_checks"),
    )
    op.execute(sa.schema.CreateSequence(sa.Sequence("ticket_number_seq", start=10001)))
    op.create_table(
        "tickets",
        sa.Column("number", sa.BigInteger(), sa.Sequence("ticket_number_seq"), nullable=False),
        sa.Column("reference", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), server_default="open", nullable=False),
        sa.Column("category", sa.String(200), nullable=True),
        sa.Column("priority", sa.String(200), nullable=True),
        sa.Column("resource", sa.String(200), nullable=True),
        sa.Column("requester", sa.String(320), nullable=False),
        sa.Column("source_account_id", sa.String(200), nullable=False),
        sa.Column("bundle_key", sa.Text(), nullable=True),
        sa.Column("opening_poll_cycle", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_tickets"),
        sa.UniqueConstraint("reference", name="uq_tickets_reference"),
    )
    op.create_table(
        "ticket_steps",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("ticket_number", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(200), nullable=True),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("sender", sa.String(320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_number"], ["tickets.number"], name="fk_ticket_steps_ticket_number_tickets", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ticket_steps"),
        sa.UniqueConstraint("ticket_number", "position", name="uq_ticket_steps_ticket_number_position"),
    )
    op.create_table(
        "processed_mails",
        sa.Column("account_id", sa.String(200), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("ticket_number", sa.BigInteger(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("processed_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "source_id", name="pk_processed_mails"),
    )
    op.create_index(
        "uq_processed_mails_account_message_id",
        "processed_mails",
        ["account_id", "message_id"],
        unique=True,
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("processed_mails")
    op.drop_table("ticket_steps")
    op.drop_table("tickets")
    op.execute(sa.schema.DropSequence(sa.Sequence("ticket_number_seq")))
    op.drop_table("claim_checks")
    op.drop_table("mailbox_state")
