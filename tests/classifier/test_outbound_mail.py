"""mailintake/outbound_mail.py: the format of our Message-IDs and references, in step with the ticketer."""

from __future__ import annotations

import pytest

from mailintake.outbound_mail import format_outbound_message_id, format_ticket_reference, ticket_number_of_message_id
from services.ticketer.core import format_reference

TOKEN = "6f1c0e7a9b2d4c35a1e8f0d2c4b6a890"


def test_a_message_id_names_its_ticket_back():
    message_id = format_outbound_message_id("mi", 10042, "helpdesk.example.org")
    assert ticket_number_of_message_id(message_id, "mi") == 10042
    assert ticket_number_of_message_id(f" {message_id} ", "mi") == 10042


@pytest.mark.parametrize(
    "message_id",
    [
        f"<mi-10042.{TOKEN}@helpdesk.example.org",  # no closing bracket
        f"<mi-10042.{TOKEN[:-1]}@helpdesk.example.org>",  # short token
        f"<mi-x.{TOKEN}@helpdesk.example.org>",
        "<CAF3x9Yq7=scan-0042@mail.gmail.com>",
        f"<other-10042.{TOKEN}@helpdesk.example.org>",
    ],
)
def test_other_ids_name_no_ticket(message_id):
    assert ticket_number_of_message_id(message_id, "mi") is None


def test_domains_compare_case_insensitively():
    message_id = format_outbound_message_id("mi", 1, "HelpDesk.Example.org", TOKEN)
    assert ticket_number_of_message_id(message_id, "mi", frozenset({"helpdesk.example.org"})) == 1


@pytest.mark.parametrize(
    ("instance", "domain", "token"),
    [("MI", "x.example", TOKEN), ("mi", "bad domain", TOKEN), ("mi", "x.example", "not-hex")],
)
def test_bad_parts_are_refused(instance, domain, token):
    with pytest.raises(ValueError):
        format_outbound_message_id(instance, 1, domain, token)


def test_reference_format_is_the_ticketers():
    assert format_ticket_reference("mi", 10042) == format_reference("mi", 10042)

