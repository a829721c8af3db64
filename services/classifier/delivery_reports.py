"""Bounces: RFC 3464 delivery status notifications (``multipart/report; report-type=delivery-status``).

A DSN carries a human-readable part, a ``message/delivery-status`` part with one
block per recipient (``Action: failed``, ``Status: 5.1.1``), and the original message
as ``message/rfc822`` or only its headers as ``text/rfc822-headers``. The classifier
reports the original's Message-ID, so the ticketer can attach the bounce to the ticket
the original belonged to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32

from services.classifier.headers import message_ids


@dataclass(frozen=True)
class DeliveryReport:
    original_message_id: str | None
    status: str | None
    """The RFC 3463 status of the first recipient that has one (``5.1.1``)."""


def is_delivery_report(part: Message) -> bool:
    return part.get_content_type() == "multipart/report" and (part.get_param("report-type") or "").lower() == "delivery-status"


def is_disposition_report(part: Message) -> bool:
    """A read receipt (RFC 8098 MDN): automatic, like an auto-reply."""
    return (
        part.get_content_type() == "multipart/report"
        and (part.get_param("report-type") or "").lower() == "disposition-notification"
    )


def _first_value(message: Message, name: str) -> str | None:
    value = message.get(name)
    return value if isinstance(value, str) else None


def _status(part: Message) -> str | None:
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        return None
    for block in blocks:
        if isinstance(block, Message):
            status = _first_value(block, "Status")
            if status and status.strip():
                return status.strip().split(None, 1)[0][:32]
    return None


def _original_message_id(part: Message, text_of: Callable[[Message], str]) -> str | None:
    content_type = part.get_content_type()
    if content_type in ("message/rfc822", "message/global"):
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            found = message_ids(_first_value(inner[0], "Message-ID"), limit=1)
            return found[0] if found else None
        return None
    if content_type in ("text/rfc822-headers", "message/global-headers"):
        headers = HeaderParser(policy=compat32).parsestr(text_of(part))
        found = message_ids(_first_value(headers, "Message-ID"), limit=1)
        return found[0] if found else None
    return None


def read_delivery_report(report: Message, text_of: Callable[[Message], str]) -> DeliveryReport:
    """The original Message-ID and status of a ``multipart/report`` DSN.

    ``text_of`` decodes a text part (the parser's charset handling), for ``text/rfc822-headers``.
    """
    parts = report.get_payload()
    if not isinstance(parts, list):
        return DeliveryReport(None, None)
    original_id, status = None, None
    for part in parts:
        if not isinstance(part, Message):
            continue
        if part.get_content_type() == "message/delivery-status" and status is None:
            status = _status(part)
        elif original_id is None:
            original_id = _original_message_id(part, text_of)
    return DeliveryReport(original_id, status)
