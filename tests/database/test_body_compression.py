"""Mail bodies and stored raw mails are compressed with lz4 on the stack's PostgreSQL (revision 0012)."""

from __future__ import annotations

import random

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from mailintake.claim_check import ClaimCheckStore
from mailintake.database import engine_for
from mailintake.database.migrate import alembic_config, upgrade
from services.ticketer.tables import Ticket, TicketStep
from tests.database_schemas import migrated_schema

pytestmark = pytest.mark.stack

COMPRESSED_COLUMNS = [("claim_checks", "content"), ("outbound_mails", "body_text"), ("ticket_steps", "body_text")]
WORDS = ["Drucker", "Etage", "kaputt", "Grüße", "bitte", "prüfen", "Toner", "Netzwerk", "Anmeldung", "gesperrt", "heute"]


def _compression_by_column(url: str) -> dict[tuple[str, str], str]:
    """pg_attribute.attcompression of each column of COMPRESSED_COLUMNS: 'l' for lz4, '' for the default."""
    wanted = ", ".join(f"('{table}', '{column}')" for table, column in COMPRESSED_COLUMNS)
    with engine_for(url).connect() as connection:
        rows = connection.execute(
            text(
                "SELECT c.relname, a.attname, a.attcompression FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid "
                f"WHERE c.relnamespace = current_schema()::regnamespace AND (c.relname, a.attname) IN ({wanted})"
            )
        )
        return {(table, column): compression for table, column, compression in rows}


def _prose(size: int) -> str:
    rng = random.Random(size)
    return " ".join(rng.choice(WORDS) for _ in range(size // 7))[:size]


def test_the_bodies_columns_are_set_to_lz4(stack):
    with migrated_schema(stack.database_url, "lz4") as url:
        assert _compression_by_column(url) == dict.fromkeys(COMPRESSED_COLUMNS, "l")


def test_a_step_body_and_a_stored_mail_are_written_with_lz4_and_read_back_intact(stack):
    body = _prose(20_000)
    raw = ("Subject: Drucker\r\n\r\n" + _prose(300_000)).encode()
    with migrated_schema(stack.database_url, "lz4") as url:
        engine = engine_for(url)
        with Session(engine) as session, session.begin():
            ticket = Ticket(reference="T-1", subject="Drucker", requester="anna@example.com", source_account_id="a")
            session.add(ticket)
            session.flush()
            session.add(TicketStep(ticket_number=ticket.number, position=1, direction="in", subject="Drucker", body_text=body))
        check = ClaimCheckStore(engine).put(raw)
        with engine.connect() as connection:
            stored_body, body_method = connection.execute(
                select(TicketStep.body_text, text("pg_column_compression(body_text)"))
            ).one()
            mail_method = connection.scalar(text("SELECT pg_column_compression(content) FROM claim_checks"))
        assert (stored_body, body_method) == (body, "lz4")
        assert mail_method == "lz4"
        assert ClaimCheckStore(engine).get(check) == raw


def test_downgrade_puts_the_servers_default_back(stack):
    with migrated_schema(stack.database_url, "lz4") as url:
        command.downgrade(alembic_config(url), "0011")
        assert _compression_by_column(url) == dict.fromkeys(COMPRESSED_COLUMNS, "")
        upgrade(url)
        assert _compression_by_column(url) == dict.fromkeys(COMPRESSED_COLUMNS, "l")
