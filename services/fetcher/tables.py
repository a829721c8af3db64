"""Tables the fetcher owns: the durable per-mailbox high-water mark."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String, func
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
