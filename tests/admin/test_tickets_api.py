"""The read-only ticket API against the stack's PostgreSQL, through FastAPI's TestClient.

Each test writes its own tickets under a unique account id and filters by it, so the
other tickets in the shared database do not matter.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from mailintake.database import engine_for
from services.admin.app import create_app
from services.admin.settings import AdminSettings
from services.ticketer.tables import TICKET_NUMBER_SEQUENCE, Location, Ticket, TicketStep, User

pytestmark = pytest.mark.stack


@pytest.fixture
def client(stack, admin_token):
    app = create_app(AdminSettings(database_url=stack.database_url))
    with TestClient(app, headers={"Authorization": f"Bearer {admin_token}"}) as test_client:
        yield test_client


def add_ticket(stack, account, subject, created_at, **fields) -> int:
    with engine_for(stack.database_url).begin() as connection:
        number = connection.scalar(TICKET_NUMBER_SEQUENCE.next_value())
        connection.execute(
            insert(Ticket).values(
                number=number, reference=f"[#mi-{number}]", subject=subject, source_account_id=account,
                requester=fields.pop("requester", "someone@example.net"), created_at=created_at, updated_at=created_at,
                **fields,
            )
        )
    return number


@pytest.fixture
def tickets(stack, unique):
    """Five tickets of one account (oldest first) and one of another account."""
    account = f"api-{unique}"
    numbers = {
        "printer": add_ticket(stack, account, "Printer jammed", datetime(2020, 1, 1), category="Hardware",
                              priority="high", resource="1st level", requester="Max@Example.com"),
        "vpn": add_ticket(stack, account, "VPN drops", datetime(2020, 2, 1), category="Network", priority="low",
                          requester="erika@example.org"),
        "percent": add_ticket(stack, account, "Disk 100% full", datetime(2020, 3, 1), status="closed"),
        "thousand": add_ticket(stack, account, "Disk 1000 GB left", datetime(2020, 4, 1)),
        "underscore": add_ticket(stack, account, "file_name wrong", datetime(2020, 5, 1)),
    }
    add_ticket(stack, f"other-{unique}", "Printer jammed", datetime(2020, 1, 1), category="Hardware")
    return account, numbers


def listed(client, **params) -> list[int]:
    response = client.get("/api/tickets", params=params)
    assert response.status_code == 200, response.text
    return [item["number"] for item in response.json()["items"]]


def test_filters_narrow_the_list_and_each_can_exclude(client, tickets):
    account, n = tickets
    everything = [n["underscore"], n["thousand"], n["percent"], n["vpn"], n["printer"]]
    assert listed(client, account=account) == everything, "newest first, only this account"
    assert listed(client, account=account, status="closed") == [n["percent"]]
    assert listed(client, account=account, status="open") == [x for x in everything if x != n["percent"]]
    assert listed(client, account=account, requester="max@EXAMPLE.com") == [n["printer"]]
    assert listed(client, account=account, category="Hardware") == [n["printer"]]
    assert listed(client, account=account, priority="low") == [n["vpn"]]
    assert listed(client, account=account, resource="1st level") == [n["printer"]]
    assert listed(client, account=account, q="jAMMed") == [n["printer"]]
    # '%' and '_' are text, not wildcards.
    assert listed(client, account=account, q="100%") == [n["percent"]]
    assert listed(client, account=account, q="e_n") == [n["underscore"]]
    assert listed(client, account=account, created_after="2020-02-01T00:00:00", created_before="2020-04-01T00:00:00") == [
        n["percent"], n["vpn"],
    ]
    # A time with a zone is an instant: 01:00 at +02:00 is 23:00 UTC the day before.
    assert listed(client, account=account, created_before="2020-02-01T01:00:00+02:00") == [n["printer"]]
    assert listed(client, account=account, category="Hardware", priority="low") == []


def test_pages_split_the_list_without_overlap_and_report_the_total(client, tickets):
    account, n = tickets
    first = client.get("/api/tickets", params={"account": account, "limit": 2}).json()
    second = client.get("/api/tickets", params={"account": account, "limit": 2, "offset": 2}).json()
    last = client.get("/api/tickets", params={"account": account, "limit": 2, "offset": 4}).json()
    assert [first["total"], second["total"], last["total"]] == [5, 5, 5]
    pages = [[t["number"] for t in page["items"]] for page in (first, second, last)]
    assert pages == [[n["underscore"], n["thousand"]], [n["percent"], n["vpn"]], [n["printer"]]]
    assert (second["limit"], second["offset"]) == (2, 2)


def test_a_ticket_is_listed_with_its_fields_in_utc(client, tickets):
    account, n = tickets
    [printer] = client.get("/api/tickets", params={"account": account, "category": "Hardware"}).json()["items"]
    assert printer == {
        "number": n["printer"], "reference": f"[#mi-{n['printer']}]", "subject": "Printer jammed", "status": "open",
        "requester": "Max@Example.com", "account": account, "category": "Hardware", "priority": "high",
        "resource": "1st level", "requester_user_id": None, "location_id": None,
        "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z",
    }


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"offset": -1}, {"created_after": "yesterday"}])
def test_bad_parameters_are_refused(client, params):
    assert client.get("/api/tickets", params=params).status_code == 422


def test_a_ticket_comes_with_its_steps_in_order(stack, client, tickets):
    _, n = tickets
    with engine_for(stack.database_url).begin() as connection:
        for position, body in ((2, "Still jammed."), (1, "Paper jam."), (3, "Fixed, thanks.")):
            connection.execute(
                insert(TicketStep).values(
                    ticket_number=n["printer"], position=position, direction="inbound", sender="max@example.com",
                    subject="Printer jammed", body_text=body, message_id=f"<{position}@example.com>",
                )
            )
    response = client.get(f"/api/tickets/{n['printer']}")
    assert response.status_code == 200
    ticket = response.json()
    assert ticket["reference"] == f"[#mi-{n['printer']}]"
    assert [(s["position"], s["body_text"]) for s in ticket["steps"]] == [
        (1, "Paper jam."), (2, "Still jammed."), (3, "Fixed, thanks."),
    ]
    assert ticket["steps"][0]["message_id"] == "<1@example.com>"


def test_an_unknown_ticket_is_a_404_that_says_so(client):
    response = client.get("/api/tickets/999999999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "no ticket with number 999999999999"}


def all_items(client, path):
    items, offset = [], 0
    while True:
        page = client.get(path, params={"limit": 500, "offset": offset}).json()
        items += page["items"]
        offset += 500
        if offset >= page["total"]:
            return items


def test_users_and_locations_are_listed(stack, client, unique):
    with engine_for(stack.database_url).begin() as connection:
        location = connection.scalar(
            insert(Location).values(name=f"Example {unique}", domain=f"{unique}.example.com").returning(Location.id)
        )
        user = connection.scalar(
            insert(User)
            .values(login=f"max-{unique}", email=f"max@{unique}.example.com", display_name="Max", location_id=location)
            .returning(User.id)
        )
    [listed_location] = [loc for loc in all_items(client, "/api/locations") if loc["id"] == location]
    assert (listed_location["name"], listed_location["domain"]) == (f"Example {unique}", f"{unique}.example.com")
    [listed_user] = [u for u in all_items(client, "/api/users") if u["id"] == user]
    assert (listed_user["login"], listed_user["email"], listed_user["location_id"]) == (
        f"max-{unique}", f"max@{unique}.example.com", location,
    )


def test_the_openapi_document_describes_the_api(client):
    document = client.get("/openapi.json").json()
    assert document["info"]["title"] == "mailintake admin"
    assert {"/api/tickets", "/api/tickets/{number}", "/api/users", "/api/locations"} <= set(document["paths"])
    parameters = {p["name"] for p in document["paths"]["/api/tickets"]["get"]["parameters"]}
    assert parameters == {
        "status", "requester", "account", "category", "priority", "resource", "created_after", "created_before", "q",
        "limit", "offset",
    }
    detail = document["paths"]["/api/tickets/{number}"]["get"]["responses"]
    assert "404" in detail and detail["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TicketDetail"
    }
    assert "steps" in document["components"]["schemas"]["TicketDetail"]["properties"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text


def test_mailintake_run_admin_serves_the_api_over_http(stack, admin_token):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mailintake", "run", "admin"],
        env={**os.environ, "MAILINTAKE_ADMIN_PORT": str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline, response = time.monotonic() + 30, None
        while time.monotonic() < deadline and response is None:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/api/tickets", params={"limit": 1}, timeout=5,
                    headers={"Authorization": f"Bearer {admin_token}"},
                )
            except httpx.TransportError:
                time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert response is not None and response.status_code == 200, output[-3000:]
    assert set(response.json()) == {"items", "total", "limit", "offset"}
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status names it.
    assert "Application shutdown complete." in output
    assert process.returncode in (0, -signal.SIGTERM), output[-3000:]
