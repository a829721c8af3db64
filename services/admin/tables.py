"""Tables the admin service owns: its bearer tokens, the audit log of changes, and pending consent flows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, LargeBinary, String, func, text
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


class PendingConsent(Base):
    """A consent flow ("Connect with Microsoft") between its start and the provider's answer.

    Taken (deleted) by the callback, so a state is used once; ``expires_at`` bounds how
    long the admin may take at the provider. ``payload`` is encrypted with the accounts'
    key: it holds the PKCE verifier and nonce, and the account being connected with its
    client secret.
    """

    __tablename__ = "admin_pending_consents"

    state: Mapped[str] = mapped_column(String(100), primary_key=True)
    session_sha256: Mapped[str] = mapped_column(String(64))
    """The SHA-256 of the admin token whose session started the flow: a revoked token ends it."""
    browser_sha256: Mapped[str] = mapped_column(String(64))
    """The SHA-256 of the flow's cookie, so only the browser that started the flow can finish it."""
    actor: Mapped[str] = mapped_column(String(300))
    account_id: Mapped[str] = mapped_column(String(100))
    editing: Mapped[bool] = mapped_column()
    """True when the flow connects a stored account (an update), False for a new one."""
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(index=True)
