"""Read-only queries on tickets, for the CLI and the API; rows carry the table's columns."""

from __future__ import annotations

from sqlalchemy import Engine, Row, select

from services.ticketer.tables import Ticket, TicketStep


def list_tickets(engine: Engine, limit: int = 50, status: str | None = None) -> list[Row]:
    query = select(Ticket).order_by(Ticket.number.desc()).limit(limit)
    if status:
        query = query.where(Ticket.status == status)
    with engine.connect() as connection:
        return list(connection.execute(query))


def ticket_with_steps(engine: Engine, number: int) -> tuple[Row | None, list[Row]]:
    with engine.connect() as connection:
        row = connection.execute(select(Ticket).where(Ticket.number == number)).first()
        steps = connection.execute(
            select(TicketStep).where(TicketStep.ticket_number == number).order_by(TicketStep.position)
        ).all()
    return row, list(steps)
