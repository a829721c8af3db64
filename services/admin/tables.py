"""Tables the admin service owns: its bearer tokens and the audit log of changes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from mailintake.database import Base


class AdminToken(Base):
    """A bearer token of the admin API and page. Only its SHA-256 is kept: the token
    itself is shown once, by `mailintake admin token create`."""

    __tablename__ = "admin_tokens"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    # The token is 256 random bits, so a plain hash is enough: there is nothing to brute-force.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column()


class AuditEntry(Base):
    """One change made through the admin service: who, what, when. ``fields`` names
    the fields that changed (``password`` included), never their values."""

    __tablename__ = "admin_audit_log"
    __table_args__ = (Index("ix_admin_audit_log_target", "target"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(server_default=func.now())
    actor: Mapped[str] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    fields: Mapped[list] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
