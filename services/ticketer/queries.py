"""Read-only queries on tickets, users and locations, for the CLI and the admin API;
rows carry the table's columns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Engine, Row, func, select

from services.ticketer.tables import Location, Ticket, TicketStep, User


@dataclass(frozen=True)
class TicketFilter:
    """Which tickets a listing shows. Every field left None matches any ticket."""

    status: str | None = None
    requester: str | None = None
    """Requester's address, any case."""
    account: str | None = None
    """Id of the account the ticket came in on."""
    category: str | None = None
    priority: str | None = None
    resource: str | None = None
    created_after: datetime | None = None
    """Created at or after this instant."""
    created_before: datetime | None = None
    """Created before this instant."""
    subject_contains: str | None = None
    """Text the subject contains, any case; '%' and '_' are literal."""

    def conditions(self) -> list[ColumnElement[bool]]:
        exact = {
            Ticket.status: self.status,
            Ticket.source_account_id: self.account,
            Ticket.category: self.category,
            Ticket.priority: self.priority,
            Ticket.resource: self.resource,
        }
        conditions = [column == value for column, value in exact.items() if value is not None]
        if self.requester is not None:
            conditions.append(func.lower(Ticket.requester) == self.requester.lower())
        # An aware datetime is compared as an instant (PostgreSQL converts the column
        # from the session time zone); a naive one is taken as that zone's local time.
        if self.created_after is not None:
            conditions.append(Ticket.created_at >= self.created_after)
        if self.created_before is not None:
            conditions.append(Ticket.created_at < self.created_before)
        if self.subject_contains:
            pattern = self.subject_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(Ticket.subject.ilike(f"%{pattern}%", escape="\\"))
        return conditions


def list_tickets(engine: Engine, where: TicketFilter = TicketFilter(), limit: int = 50, offset: int = 0) -> list[Row]:
    """Tickets matching ``where``, newest first."""
    return ticket_page(engine, where, limit, offset)[0]


def ticket_page(engine: Engine, where: TicketFilter, limit: int, offset: int) -> tuple[list[Row], int]:
    """One page of the tickets matching ``where``, newest first, and how many match in all."""
    conditions = where.conditions()
    query = select(Ticket).where(*conditions).order_by(Ticket.number.desc()).limit(limit).offset(offset)
    with engine.connect() as connection:
        rows = list(connection.execute(query))
        total = connection.scalar(select(func.count()).select_from(Ticket).where(*conditions))
    return rows, total


def ticket_with_steps(engine: Engine, number: int) -> tuple[Row | None, list[Row]]:
    with engine.connect() as connection:
        row = connection.execute(select(Ticket).where(Ticket.number == number)).first()
        steps = connection.execute(
            select(TicketStep).where(TicketStep.ticket_number == number).order_by(TicketStep.position)
        ).all()
    return row, list(steps)


def list_users(engine: Engine, limit: int = 50, offset: int = 0) -> tuple[list[Row], int]:
    """One page of users in creation order, and how many there are."""
    with engine.connect() as connection:
        rows = list(connection.execute(select(User).order_by(User.id).limit(limit).offset(offset)))
        total = connection.scalar(select(func.count()).select_from(User))
    return rows, total


def list_locations(engine: Engine, limit: int = 50, offset: int = 0) -> tuple[list[Row], int]:
    """One page of locations in creation order, and how many there are."""
    with engine.connect() as connection:
        rows = list(connection.execute(select(Location).order_by(Location.id).limit(limit).offset(offset)))
        total = connection.scalar(select(func.count()).select_from(Location))
    return rows, total
