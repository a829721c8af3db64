"""What an Outlook ``winmail.dat`` (TNEF, ``application/ms-tnef``) holds, read with ``tnefparse``. Pure.

Outlook wraps attachments, and sometimes the whole body, into one TNEF attachment
that no other client can open. The classifier lists the files inside as attachments
of their own and takes the body from it when the MIME structure has none. A body kept
only as compressed RTF is converted to text or HTML (``rich_text.py``).
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass

from tnefparse import TNEF

from services.classifier.charsets import decode_text
from services.classifier.rich_text import rtf_body

MAX_TNEF_BYTES = 8 * 1024 * 1024
"""Largest winmail.dat unpacked. tnefparse copies the rest of the file for every
object it reads, so time grows with the square of the size; bigger ones are listed as
one opaque attachment."""


@dataclass(frozen=True)
class TnefMember:
    filename: str | None
    content_type: str
    size: int


@dataclass(frozen=True)
class TnefContents:
    members: tuple[TnefMember, ...]
    body_text: str | None
    body_html: str | None
    defect: str | None = None
    """Why a body that is there could not be read, or only in part (a broken RTF body)."""


def _as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return decode_text(bytes(value).rstrip(b"\x00"))[0]
    return None


def _member_name(attachment: object) -> str | None:
    try:
        name = attachment.long_filename()  # type: ignore[attr-defined]
    except (UnicodeDecodeError, AttributeError, ValueError):
        raw = getattr(attachment, "_name", b"")
        name = _as_text(raw)
    if isinstance(name, bytes):
        name = _as_text(name)
    name = (name or "").strip("\x00").strip()
    return name or None


def read_tnef(data: bytes) -> TnefContents:
    """The files and body inside TNEF ``data``; ``ValueError`` when it is no readable TNEF."""
    try:
        tnef = TNEF(data, do_checksum=False)
    except Exception as error:  # noqa: BLE001 - tnefparse raises anything on malformed input
        raise ValueError(f"unreadable TNEF: {type(error).__name__}: {error}") from None
    members = []
    for attachment in tnef.attachments:
        name = _member_name(attachment)
        content_type = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
        members.append(TnefMember(name, content_type, len(getattr(attachment, "data", b"") or b"")))
    body_text, body_html = _as_text(tnef.body), _as_text(tnef.htmlbody)
    # tnefparse keeps the compressed RTF as read; its ``rtfbody`` would decompress a body of
    # any announced size, so the bytes are taken as they are and checked first.
    compressed_rtf = getattr(tnef, "_rtfbody", None)
    if body_text is None and body_html is None and compressed_rtf:
        try:
            rtf = rtf_body(bytes(compressed_rtf))
        except ValueError as error:
            return TnefContents(tuple(members), None, None, str(error))
        return TnefContents(tuple(members), rtf.text, rtf.html, rtf.defect)
    return TnefContents(tuple(members), body_text, body_html)
