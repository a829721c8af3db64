"""Turn raw RFC 5322 bytes into the fields the rules look at. Pure.

The standard ``email`` package with ``policy.default`` parses; when it raises on
a broken header, the ``compat32`` policy, which keeps raw values, is the fallback.
"""

from __future__ import annotations

import email
import hashlib
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message

from mailintake.contracts import InvalidMessage
from services.classifier.addresses import first_address
from services.classifier.subjects import normalise_subject


@dataclass(frozen=True)
class ParsedMail:
    """What the decision rules need of one mail."""

    sender: str
    sender_name: str | None
    subject: str
    body_text: str
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    raw_sha256: str = ""


def _header(message: Message, name: str) -> str | None:
    try:
        value = message.get(name)
    except Exception:  # noqa: BLE001 - a malformed header must not make the mail unreadable
        value = None
    return None if value is None else str(value)


def _body_text(message: Message) -> str:
    part = message.get_body(preferencelist=("plain",)) if isinstance(message, EmailMessage) else None
    if part is None:
        part = next((p for p in message.walk() if p.get_content_type() == "text/plain"), None)
    if part is None:
        return ""
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return payload.decode("utf-8", errors="replace")


def parse_mail(raw: bytes) -> ParsedMail:
    """Parse ``raw``; raise :class:`InvalidMessage` when no sender can be found at all."""
    try:
        message = email.message_from_bytes(raw, policy=policy.default)
        sender_name, sender = first_address(_header(message, "From"))
    except Exception:  # noqa: BLE001 - fall back to the lenient policy for broken input
        message = email.message_from_bytes(raw, policy=policy.compat32)
        sender_name, sender = first_address(_header(message, "From"))
    for fallback in ("Sender", "Return-Path"):
        if sender is None:
            sender_name, sender = first_address(_header(message, fallback))
    if sender is None:
        raise InvalidMessage("mail has no sender address in From, Sender or Return-Path")
    references = tuple((_header(message, "References") or "").split())
    return ParsedMail(
        sender=sender,
        sender_name=sender_name,
        subject=normalise_subject(_header(message, "Subject")),
        body_text=_body_text(message),
        message_id=(_header(message, "Message-ID") or "").strip() or None,
        in_reply_to=(_header(message, "In-Reply-To") or "").strip() or None,
        references=references,
        headers={k.lower(): str(v) for k, v in message.items()} if hasattr(message, "items") else {},
        raw_sha256=hashlib.sha256(raw).hexdigest(),
    )
