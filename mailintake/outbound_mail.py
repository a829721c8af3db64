"""What mailintake's own outbound mail carries, so that replies to it can be recognised. Pure.

The ticketer and sender write these; the classifier reads them:

* a Message-ID ``<{instance_id}-{ticket_number}.{token}@{domain}>`` with a 32-hex-digit
  random token, e.g. ``<mi-10042.6f1c0e7a9b2d4c35a1e8f0d2c4b6a890@helpdesk.example.com>``.
  A reply's In-Reply-To or References naming it is a follow-up to that ticket even
  when the customer's client dropped the reference from the subject. The ticket number
  travels in the id because the classifier is stateless and cannot look it up;
* the header ``X-Mailintake-Instance: <instance_id>``, so our own mail coming back (an
  auto-answer to an auto-answer, a mailbox receiving its own copies) is seen as a loop;
* the ticket reference ``[#<instance_id>-<number>]`` in the subject.

This module is the one definition: the ticketer's auto-answers import
:func:`format_outbound_message_id` from here, the classifier's rules read ids back
with :func:`ticket_number_of_message_id`.
"""

from __future__ import annotations

import re
import uuid

INSTANCE_HEADER = "X-Mailintake-Instance"
"""Header set on every mail mailintake sends; its value is the sending installation's instance id."""

_MESSAGE_ID = re.compile(
    r"^<(?P<instance>[a-z0-9]{1,16})-(?P<number>\d{1,18})\.[0-9a-f]{32}@(?P<domain>[^<>@\s]{1,255})>$"
)
_INSTANCE_ID = re.compile(r"^[a-z0-9]{1,16}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_TOKEN = re.compile(r"^[0-9a-f]{32}$")


def format_outbound_message_id(instance_id: str, ticket_number: int, domain: str, token: str | None = None) -> str:
    """A new Message-ID (with angle brackets) for a mail about ``ticket_number``.

    ``token`` (32 lower-case hex digits) is random unless given.

    >>> format_outbound_message_id("mi", 10042, "helpdesk.example.com", "6f1c0e7a9b2d4c35a1e8f0d2c4b6a890")
    '<mi-10042.6f1c0e7a9b2d4c35a1e8f0d2c4b6a890@helpdesk.example.com>'
    """
    if not _INSTANCE_ID.match(instance_id):
        raise ValueError(f"instance id {instance_id!r} is not 1-16 lower-case letters or digits")
    if not _DOMAIN.match(domain):
        raise ValueError(f"{domain!r} cannot be the right-hand side of a Message-ID")
    if ticket_number < 0:
        raise ValueError(f"ticket number {ticket_number} is negative")
    token = uuid.uuid4().hex if token is None else token
    if not _TOKEN.match(token):
        raise ValueError(f"token {token!r} is not 32 lower-case hex digits")
    return f"<{instance_id}-{ticket_number}.{token}@{domain}>"


def ticket_number_of_message_id(message_id: str, instance_id: str, domains: frozenset[str] = frozenset()) -> int | None:
    """The ticket number inside one of our Message-IDs; None for anyone else's.

    Ours means: our format and our instance id, and, when ``domains`` is not empty,
    a right-hand side among them (compared case-insensitively, as domains are).

    >>> ticket_number_of_message_id("<mi-7.6f1c0e7a9b2d4c35a1e8f0d2c4b6a890@x.example>", "mi")
    7
    >>> ticket_number_of_message_id("<other-7.6f1c0e7a9b2d4c35a1e8f0d2c4b6a890@x.example>", "mi") is None
    True
    """
    match = _MESSAGE_ID.match(message_id.strip())
    if match is None or match.group("instance") != instance_id:
        return None
    if domains and match.group("domain").lower() not in domains:
        return None
    return int(match.group("number"))


def format_ticket_reference(instance_id: str, number: int) -> str:
    """The reference tag written into subjects: ``[#mi-10042]``.

    The same format as ``services.ticketer.core.format_reference`` (a test keeps them
    equal), here so the classifier can name the ticket a Message-ID points at without
    importing another service.
    """
    return f"[#{instance_id}-{number}]"
