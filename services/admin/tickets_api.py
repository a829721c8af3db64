"""Read-only API on tickets, users and locations: ``/api/tickets``, ``/api/users``, ``/api/locations``.

Timestamps are stored without a time zone, in the database session's zone, which is
UTC on the stack and should be UTC on every server; the API presents them as UTC, and
takes a filter time without a zone as UTC too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import Engine

from services.ticketer.queries import TicketFilter, list_locations, list_users, ticket_page, ticket_with_steps


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True, validate_by_name=True, validate_by_alias=True)


class TicketSummary(_FromRow):
    number: int
    reference: str = Field(description="Reference written into subjects, e.g. [#mi-10042].")
    subject: str
    status: str
    requester: str = Field(description="Requester's mail address.")
    account: str = Field(validation_alias="source_account_id", description="Id of the account the ticket came in on.")
    category: str | None
    priority: str | None
    resource: str | None
    requester_user_id: int | None
    location_id: int | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class TicketStepOut(_FromRow):
    position: int = Field(description="1 for the opening mail, then in order.")
    direction: str = Field(description="inbound (a mail received), outbound (a mail sent, such as the auto-answer) or note (a bounce of a mail sent).")
    sender: str | None
    subject: str
    body_text: str
    message_id: str | None
    created_at: UtcDatetime


class TicketDetail(TicketSummary):
    steps: list[TicketStepOut]


class UserOut(_FromRow):
    id: int
    login: str
    email: str
    display_name: str | None
    location_id: int | None
    created_from_account_id: str | None
    created_at: UtcDatetime


class LocationOut(_FromRow):
    id: int
    name: str
    domain: str
    created_at: UtcDatetime


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    total: int = Field(description="How many match in all, on every page.")
    limit: int
    offset: int


def database(request: Request) -> Engine:
    return request.app.state.engine


Database = Annotated[Engine, Depends(database)]
Limit = Annotated[int, Query(ge=1, le=500, description="At most this many items.")]
Offset = Annotated[int, Query(ge=0, description="Skip this many items first.")]

router = APIRouter(prefix="/api")


@router.get("/tickets", response_model=Page[TicketSummary], summary="List tickets, newest first")
def get_tickets(
    engine: Database,
    status: Annotated[str | None, Query(description="open, closed, ...")] = None,
    requester: Annotated[str | None, Query(description="Requester's address, any case.")] = None,
    account: Annotated[str | None, Query(description="Id of the account the ticket came in on.")] = None,
    category: str | None = None,
    priority: str | None = None,
    resource: str | None = None,
    created_after: Annotated[datetime | None, Query(description="Created at or after (ISO 8601; UTC if no zone).")] = None,
    created_before: Annotated[datetime | None, Query(description="Created before (ISO 8601; UTC if no zone).")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text the subject contains, any case.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[TicketSummary]:
    where = TicketFilter(
        status=status,
        requester=requester,
        account=account,
        category=category,
        priority=priority,
        resource=resource,
        created_after=_as_utc(created_after) if created_after else None,
        created_before=_as_utc(created_before) if created_before else None,
        subject_contains=q,
    )
    rows, total = ticket_page(engine, where, limit, offset)
    return Page[TicketSummary](
        items=[TicketSummary.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )


@router.get(
    "/tickets/{number}",
    response_model=TicketDetail,
    summary="One ticket with its steps in order",
    responses={404: {"description": "No ticket has this number."}},
)
def get_ticket(number: int, engine: Database) -> TicketDetail:
    ticket, steps = ticket_with_steps(engine, number)
    if ticket is None:
        raise HTTPException(status_code=404, detail=f"no ticket with number {number}")
    summary = TicketSummary.model_validate(ticket)
    return TicketDetail(**summary.model_dump(), steps=[TicketStepOut.model_validate(step) for step in steps])


@router.get("/users", response_model=Page[UserOut], summary="List users in creation order")
def get_users(engine: Database, limit: Limit = 50, offset: Offset = 0) -> Page[UserOut]:
    rows, total = list_users(engine, limit, offset)
    return Page[UserOut](items=[UserOut.model_validate(row) for row in rows], total=total, limit=limit, offset=offset)


@router.get("/locations", response_model=Page[LocationOut], summary="List locations/customers in creation order")
def get_locations(engine: Database, limit: Limit = 50, offset: Offset = 0) -> Page[LocationOut]:
    rows, total = list_locations(engine, limit, offset)
    return Page[LocationOut](
        items=[LocationOut.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )
