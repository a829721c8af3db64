"""Tables the ticketer owns: tickets, their steps, and the processed-mail ledger."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, Sequence, String, Text, UniqueConstraint, func, text
from sqlalchemy.orm import Mapped, mapped_column

from mailintake.database import Base

TICKET_NUMBER_SEQUENCE = Sequence("ticket_number_seq", start=10001)


class Ticket(Base):
    __tablename__ = "tickets"

    number: Mapped[int] = mapped_column(BigInteger, TICKET_NUMBER_SEQUENCE, primary_key=True)
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    category: Mapped[str | None] = mapped_column(String(200))
    priority: Mapped[str | None] = mapped_column(String(200))
    resource: Mapped[str | None] = mapped_column(String(200))
    requester: Mapped[str] = mapped_column(String(320))
    source_account_id: Mapped[str] = mapped_column(String(200))
    bundle_key: Mapped[str | None] = mapped_column(Text)
    opening_poll_cycle: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TicketStep(Base):
    """One entry in a ticket's history: an inbound or outbound mail, or a note."""

    __tablename__ = "ticket_steps"
    __table_args__ = (UniqueConstraint("ticket_number", "position"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    ticket_number: Mapped[int] = mapped_column(ForeignKey("tickets.number", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    direction: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[str | None] = mapped_column(String(200))
    source_id: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    sender: Mapped[str | None] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ProcessedMail(Base):
    """The ledger: one row per mail ever handled, written in the effect's transaction.

    Its primary key makes a replayed mail a no-op; the stored outcome lets the replay
    emit the same ticket event again.
    """

    __tablename__ = "processed_mails"
    __table_args__ = (
        # Second guard: the same mail fetched under a new source id (a UIDVALIDITY reset).
        Index(
            "uq_processed_mails_account_message_id",
            "account_id",
            "message_id",
            unique=True,
            postgresql_where=text("message_id IS NOT NULL"),
        ),
    )

    account_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    source_id: Mapped[str] = mapped_column(Text, primary_key=True)
    message_id: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(32))
    ticket_number: Mapped[int | None] = mapped_column(BigInteger)
    subject: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    processed_at: Mapped[datetime] = mapped_column(server_default=func.now())
