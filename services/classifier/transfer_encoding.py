"""Content-Transfer-Encoding arithmetic on a part's payload as the parser keeps it. Pure.

The parser keeps each leaf's payload as the encoded text. Attachments are never decoded: their size is worked out from the encoded
text, so a 50 MB attachment costs no second 37 MB copy. Text bodies are decoded only
as far as the decision can carry them.
"""

from __future__ import annotations

import base64
import binascii
import re

_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")

# Quoted-printable is decoded to be measured, in slices of about this many characters,
# so that measuring never holds more than one slice's decoded bytes.
_QP_SLICE = 1 << 20


def normalised_encoding(value: str | None) -> str:
    """The transfer encoding's name, lower-cased, or ``7bit`` when none is declared."""
    return (value or "7bit").strip().lower() or "7bit"


def base64_decoded_size(payload: str) -> int:
    """Bytes that base64 ``payload`` decodes to, counted without decoding it.

    >>> base64_decoded_size("aGVsbG8=\\r\\n")
    5
    """
    whitespace = payload.count("\n") + payload.count("\r") + payload.count(" ") + payload.count("\t")
    characters = len(payload) - whitespace
    tail = payload[-16:].rstrip()
    padding = min(len(tail) - len(tail.rstrip("=")), 2)
    return max(0, (characters - padding) * 3 // 4)


def quoted_printable_decoded_size(payload: str) -> int:
    """Bytes that quoted-printable ``payload`` decodes to, decoded slice by slice.

    >>> quoted_printable_decoded_size("caf=C3=A9 =\\r\\nau lait")
    13
    """
    size, start = 0, 0
    while start < len(payload):
        end = payload.find("\n", start + _QP_SLICE)
        end = len(payload) if end == -1 else end + 1
        size += len(binascii.a2b_qp(_as_bytes(payload[start:end])))
        start = end
    return size


def _as_bytes(text: str) -> bytes:
    # ASCII stays itself and surrogate escapes become their bytes again; anything else
    # (only in broken base64 or quoted-printable) becomes UTF-8 rather than an error.
    return text.encode("utf-8", "surrogateescape")


def decode_prefix(payload: str, encoding: str, max_encoded_chars: int) -> tuple[bytes, bool]:
    """The decoded bytes of at most the first ``max_encoded_chars`` of ``payload``, and
    whether the payload was longer (so the result is cut).

    Broken base64 (bad padding, stray characters) decodes as far as it goes.

    >>> decode_prefix("aGVsbG8gd29ybGQ=", "base64", 8)
    (b'hello ', True)
    """
    cut = len(payload) > max_encoded_chars
    text = payload[:max_encoded_chars] if cut else payload
    if encoding == "base64":
        characters = _NOT_BASE64.sub("", text)
        characters = characters[: len(characters) // 4 * 4]
        try:
            return base64.b64decode(characters), cut
        except (binascii.Error, ValueError):  # pragma: no cover - only alphabet characters remain
            return b"", cut
    data = _as_bytes(text)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data), cut
    return data, cut
