"""Named auto-answer templates (subject and body, Jinja2), imported by `mailintake templates import`.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auto_answer_templates",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("subject_template", sa.Text(), nullable=False),
        sa.Column("body_template", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_auto_answer_templates"),
    )


def downgrade() -> None:
    op.drop_table("auto_answer_templates")
