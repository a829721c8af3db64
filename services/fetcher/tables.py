"""Tables the fetcher owns: stored accounts, their fetch status, and the durable
per-mailbox high-water mark."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, Integer, LargeBinary, String, Text, func, true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from mailintake.database import Base


class MailboxState(Base):
    """Where fetching of one folder of one account stands.

    ``last_uid`` only moves after Kafka acknowledged every mail up to it, so a crash
    re-fetches (and re-produces) rather than skips.
    """

    __tablename__ = "mailbox_state"

    account_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, server_default="0")
    poll_cycle: Mapped[int] = mapped_column(BigInteger, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())


class StoredAccount(Base):
    """One account as configured. ``settings`` holds every non-secret field of the
    ``Account`` model; the password and the OAuth2 secrets (client secret, refresh token,
    as one JSON object) are only ever stored encrypted."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    protocol: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=true())
    settings: Mapped[dict] = mapped_column(JSONB)
    password_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    oauth2_secrets_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    revision: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AccountStatus(Base):
    """What the fetcher last saw of an account, for the admin page and `accounts status`."""

    __tablename__ = "account_status"

    account_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_poll_at: Mapped[datetime | None] = mapped_column()
    last_success_at: Mapped[datetime | None] = mapped_column()
    last_error_at: Mapped[datetime | None] = mapped_column()
    last_error_step: Mapped[str | None] = mapped_column(String(64))
    last_error: Mapped[str | None] = mapped_column(Text)
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default="0")
    poll_lag_seconds: Mapped[float | None] = mapped_column(Float)
    mails_fetched: Mapped[int] = mapped_column(BigInteger, server_default="0")


class Pop3Uidl(Base):
    """A POP3 mail (by UIDL) that Kafka acknowledged; POP3 has no UID high-water mark."""

    __tablename__ = "pop3_uidls"

    account_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    uidl: Mapped[str] = mapped_column(String(200), primary_key=True)
    produced_at: Mapped[datetime] = mapped_column(server_default=func.now())


class EwsProducedItem(Base):
    """An EWS item (by ItemId) whose mail Kafka acknowledged, in the folder it was listed in.

    EWS has no UID high-water mark and the read flag belongs to people, so the item ids
    are the durable mark; an id is forgotten once its item has left the folder.
    """

    __tablename__ = "ews_produced_items"

    account_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    folder: Mapped[str] = mapped_column(String(500), primary_key=True)
    # Text: Exchange item ids are opaque base64 of no documented maximum length.
    item_id: Mapped[str] = mapped_column(Text, primary_key=True)
    produced_at: Mapped[datetime] = mapped_column(server_default=func.now())
