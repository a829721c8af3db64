"""Tables the ticketer owns: tickets, their steps, the processed-mail ledger, users,
locations/customers, reference data, the outbox of outbound mail and its templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, Sequence, String, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from mailintake.database import Base

TICKET_NUMBER_SEQUENCE = Sequence("ticket_number_seq", start=10001)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        # The bundle look-up when the ticketer's window table misses (after a restart
        # or a rebalance that lost it): which ticket did this key open in cycle n?
        Index(
            "ix_tickets_bundle_key_opening_poll_cycle",
            "bundle_key",
            "opening_poll_cycle",
            postgresql_where=text("bundle_key IS NOT NULL"),
        ),
    )

    number: Mapped[int] = mapped_column(BigInteger, TICKET_NUMBER_SEQUENCE, primary_key=True)
    reference: Mapped[str] = mapped_column(String(64), unique=True)
    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    category: Mapped[str | None] = mapped_column(String(200))
    priority: Mapped[str | None] = mapped_column(String(200))
    resource: Mapped[str | None] = mapped_column(String(200))
    requester: Mapped[str] = mapped_column(String(320))
    source_account_id: Mapped[str] = mapped_column(String(200))
    requester_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
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
    # Every ticket event the mail caused, ids and timestamps included: a replay
    # re-emits exactly these. NULL on rows written before revision 0005.
    events: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # The raw mail's hash: with account and source id it keeps the original reachable.
    raw_sha256: Mapped[str | None] = mapped_column(String(64))
    poll_cycle: Mapped[int | None] = mapped_column(BigInteger)
    bundle_key: Mapped[str | None] = mapped_column(Text)


class _ReferenceData:
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Resource(_ReferenceData, Base):
    """Who a new ticket is assigned to, as a new order."""

    __tablename__ = "resources"


class Category(_ReferenceData, Base):
    __tablename__ = "categories"


class Priority(_ReferenceData, Base):
    __tablename__ = "priorities"


class Location(Base):
    """A location/customer, created from a sender's domain or by hand."""

    __tablename__ = "locations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    domain: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class User(Base):
    __tablename__ = "users"
    __table_args__ = (Index("uq_users_email_lower", text("lower(email)"), unique=True),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    login: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(255))
    location_id: Mapped[int | None] = mapped_column(ForeignKey("locations.id"))
    created_from_account_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class LoginSuffix(Base):
    """The last numbered login handed out for a base login (``info`` -> 7 once ``info-7``
    exists), so a batch claims the numbers its new users need in one statement."""

    __tablename__ = "login_suffixes"

    base: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_suffix: Mapped[int] = mapped_column(BigInteger)


class OutboundMail(Base):
    """The outbox: written in the ticket's transaction, delivered later by the sender loop.

    ``dedupe_key`` (e.g. account, source id and kind) makes a replayed mail queue its
    auto-answer at most once.
    """

    __tablename__ = "outbound_mails"
    __table_args__ = (
        Index("ix_outbound_mails_due", "status", "next_attempt_at"),
        Index("ix_outbound_mails_recipient_created", "recipient", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    dedupe_key: Mapped[str] = mapped_column(String(400), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    ticket_number: Mapped[int | None] = mapped_column(ForeignKey("tickets.number", ondelete="SET NULL"))
    account_id: Mapped[str | None] = mapped_column(String(100))
    sender_name: Mapped[str | None] = mapped_column(String(255))
    sender_address: Mapped[str] = mapped_column(String(320))
    recipient: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(400), unique=True)
    in_reply_to: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_smtp_reply: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AutoAnswerTemplate(Base):
    """A named auto-answer; an account's ``auto_answer_template`` names one.

    Rows are written only by ``mailintake templates import``, which checks each
    template first, so a broken template never reaches the ticketer.
    """

    __tablename__ = "auto_answer_templates"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    subject_template: Mapped[str] = mapped_column(Text)
    body_template: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
