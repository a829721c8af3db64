"""Decoding header values: unfolding, RFC 2047 encoded words, raw 8-bit bytes. Pure.

The parser hands header values over as they were on the wire (see ``parsing``), with
any 8-bit byte kept as a surrogate escape. Decoding them here, rather than through the
``email`` header registry, lets undeclared 8-bit text fall back to cp1252 or latin-1
(the registry turns it into U+FFFD) and lets an encoded word with a wrong or unknown
charset fall back the same way.
"""

from __future__ import annotations

import re
from email.header import decode_header
from email.errors import HeaderParseError

from services.classifier.charsets import decode_text, storable_text

MAX_HEADER_CHARS = 998
"""Longest decoded value kept of a single-valued header (RFC 5322's line limit).

Headers are unbounded on the wire; a value beyond this is cut so that one hostile
header cannot push the decision past the topic's message size limit.
"""

_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_LINE_BREAK = re.compile(r"[\r\n]+")
_MSG_ID = re.compile(r"<[^<>\s]{1,996}>")


def unfold(value: str) -> str:
    """Join a folded header value into one line (RFC 5322 section 2.2.3).

    >>> unfold("Printer\\r\\n broken\\r\\n\\tagain")
    'Printer broken\\tagain'
    """
    return _LINE_BREAK.sub(" ", _FOLD.sub("", value))


def wire_bytes(value: str) -> bytes:
    """The bytes a raw header value stood for: 8-bit bytes come back from their surrogate escapes.

    A value that is already text (a parameter the parser decoded) becomes UTF-8, which
    ``decode_text`` reads back unchanged.
    """
    return value.encode("utf-8", "surrogateescape")


def decode_words(value: str) -> str:
    """Decode a raw header value: RFC 2047 encoded words and raw 8-bit bytes, any charset.

    Whitespace between adjacent encoded words disappears, as RFC 2047 says; an encoded
    word that cannot be decoded (bad base64, say) stays as written.

    >>> decode_words("=?iso-8859-1?q?Gr=FC=DFe?= aus =?utf-8?b?S8O2bG4=?=")
    'Grüße aus Köln'
    """
    line = unfold(value)
    if line.isascii() and "=?" not in line:
        return storable_text(line)
    data = wire_bytes(line)
    if b"=?" not in data:
        return storable_text(decode_text(data)[0])
    try:
        # Latin-1 maps each byte to one character and back, so raw 8-bit bytes next to
        # encoded words survive decode_header and come back as bytes to decode with fallbacks.
        chunks = decode_header(data.decode("latin-1"))
    except (HeaderParseError, ValueError, LookupError, AssertionError):
        return storable_text(decode_text(data)[0])
    texts = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):  # decode_header returns str only when it found no encoded word
            chunk = chunk.encode("latin-1")
        texts.append(decode_text(chunk, charset)[0])
    return storable_text("".join(texts))


def decoded_header(raw_values: list[str], limit: int = MAX_HEADER_CHARS) -> str | None:
    """The first value of a header, decoded and cut to ``limit`` characters; None if absent."""
    if not raw_values:
        return None
    return decode_words(raw_values[0])[:limit]


def message_ids(value: str | None, limit: int = 100) -> list[str]:
    """The ``<msg-id>`` tokens of an In-Reply-To, References or Message-ID value, in order.

    At most ``limit``: the first and the last ``limit - 1`` (RFC 5322 3.6.4 trims
    References the same way, keeping the thread's root and its latest replies).

    >>> message_ids("<a@x> junk <b@y>\\r\\n <c@z>", limit=2)
    ['<a@x>', '<c@z>']
    """
    if not value:
        return []
    found = _MSG_ID.findall(storable_text(unfold(value)))
    if len(found) > limit:
        found = found[:1] + found[-(limit - 1):] if limit > 1 else found[:1]
    return found


def first_token(value: str | None) -> str:
    """The value's first word, lower-cased, parameters dropped: ``auto-replied`` of ``Auto-Replied; owner=x``."""
    if not value:
        return ""
    head = unfold(value).split(";", 1)[0].strip()
    return head.split(None, 1)[0].lower() if head else ""
