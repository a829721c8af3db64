"""Users, locations/customers, reference data (resources, categories, priorities),
ticket ownership, and the outbox of outbound mail.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("resources", "categories", "priorities"):
        op.create_table(
            table,
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("description", sa.Text(), nullable=True),
            sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
            sa.PrimaryKeyConstraint("name", name=f"pk_{table}"),
        )
    op.create_table(
        "locations",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_locations"),
        sa.UniqueConstraint("domain", name="uq_locations_domain"),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("login", sa.String(255), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=True),
        sa.Column("location_id", sa.BigInteger(), nullable=True),
        sa.Column("created_from_account_id", sa.String(100), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["location_id"], ["locations.id"], name="fk_users_location_id_locations"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("login", name="uq_users_login"),
    )
    # Emails are unique whatever their case: Max@Example.com is max@example.com.
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)
    op.add_column("tickets", sa.Column("requester_user_id", sa.BigInteger(), nullable=True))
    op.add_column("tickets", sa.Column("location_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key("fk_tickets_requester_user_id_users", "tickets", "users", ["requester_user_id"], ["id"])
    op.create_foreign_key("fk_tickets_location_id_locations", "tickets", "locations", ["location_id"], ["id"])
    op.create_table(
        "outbound_mails",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(400), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ticket_number", sa.BigInteger(), nullable=True),
        sa.Column("account_id", sa.String(100), nullable=True),
        sa.Column("sender_name", sa.String(255), nullable=True),
        sa.Column("sender_address", sa.String(320), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(400), nullable=False),
        sa.Column("in_reply_to", sa.Text(), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.Column("last_smtp_reply", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_number"], ["tickets.number"], name="fk_outbound_mails_ticket_number_tickets", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbound_mails"),
        sa.UniqueConstraint("dedupe_key", name="uq_outbound_mails_dedupe_key"),
        sa.UniqueConstraint("message_id", name="uq_outbound_mails_message_id"),
    )
    # The sender loop's queue, and the per-recipient rate cap's look-up.
    op.create_index("ix_outbound_mails_due", "outbound_mails", ["status", "next_attempt_at"])
    op.create_index("ix_outbound_mails_recipient_created", "outbound_mails", ["recipient", "created_at"])


def downgrade() -> None:
    op.drop_table("outbound_mails")
    op.drop_constraint("fk_tickets_location_id_locations", "tickets", type_="foreignkey")
    op.drop_constraint("fk_tickets_requester_user_id_users", "tickets", type_="foreignkey")
    op.drop_column("tickets", "location_id")
    op.drop_column("tickets", "requester_user_id")
    op.drop_index("uq_users_email_lower", table_name="users")
    op.drop_table("users")
    op.drop_table("locations")
    for table in ("priorities", "categories", "resources"):
        op.drop_table(table)
