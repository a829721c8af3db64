"""An Outlook rich-text body (compressed RTF, ``PR_RTF_COMPRESSED``) as text or HTML. Pure.

Outlook keeps the body of a rich-text mail only as compressed RTF [MS-OXRTFCP] when it
sends a winmail.dat (TNEF) to a recipient it takes for another Outlook. ``compressed_rtf``
unpacks it. Two kinds of RTF come out:

* RTF that encapsulates HTML (``\\fromhtml1`` in the header, [MS-OXRTFEX]): what Outlook
  writes for a mail composed in HTML. RTFDE recovers the original HTML, which then goes
  the way of any HTML body (sanitised, and turned into text).
* Other RTF (written as rich text, or encapsulated plain text, ``\\fromtext``): striprtf
  turns it into text, with the RTF's own code page for its ``\\'xx`` escapes.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

from compressed_rtf import decompress
from RTFDE.deencapsulate import DeEncapsulator
from striprtf.striprtf import rtf_to_text

MAX_RTF_BYTES = 4 * 1024 * 1024
"""Largest uncompressed RTF converted (from the size its header announces); a body this
large in RTF is mostly embedded pictures, and the converters' time grows with it."""

MAX_HTML_RTF_BYTES = 256 * 1024
"""Largest RTF whose HTML is recovered. RTFDE parses with lark: 0.6 s for 64 KB and 8 s
for 635 KB were measured here. A larger one is read as text by striprtf (1 s for 1.9 MB)."""

# \fromhtml1 must come in the RTF header, before the first text [MS-OXRTFEX].
_HEADER_BYTES = 1024

# RTFDE logs every tag it reads at DEBUG and each repaired font table at WARNING; the
# classifier reports problems once, as a parse defect.
logging.getLogger("RTFDE").setLevel(logging.ERROR)


@dataclass(frozen=True)
class RtfBody:
    """Exactly one of ``text`` and ``html`` is set."""

    text: str | None
    html: str | None
    defect: str | None = None
    """Why HTML in the RTF was read as text only."""


def _uncompressed_size(compressed: bytes) -> int:
    if len(compressed) < 16:
        raise ValueError(f"compressed RTF of {len(compressed)} bytes is shorter than its 16-byte header")
    return struct.unpack_from("<I", compressed, 4)[0]


def rtf_body(compressed: bytes) -> RtfBody:
    """The body in ``compressed`` RTF; ``ValueError`` naming what is wrong when there is none."""
    size = _uncompressed_size(compressed)
    if size > MAX_RTF_BYTES:
        raise ValueError(f"RTF body of {size} bytes is larger than {MAX_RTF_BYTES}, not converted")
    try:
        rtf = decompress(compressed)
    except Exception as error:  # noqa: BLE001 - compressed_rtf raises bare Exception on corrupt input
        raise ValueError(f"unreadable compressed RTF: {error}") from None
    defect = None
    if b"\\fromhtml1" in rtf[:_HEADER_BYTES]:
        if len(rtf) > MAX_HTML_RTF_BYTES:
            defect = f"HTML in RTF of {len(rtf)} bytes (over {MAX_HTML_RTF_BYTES}) read as text"
        else:
            html = _encapsulated_html(rtf)
            if html is not None:
                return RtfBody(None, html)
            defect = "HTML in RTF could not be recovered, read as text"
    try:
        # latin-1 maps each byte to one character: striprtf decodes the \'xx escapes itself.
        text = rtf_to_text(rtf.decode("latin-1"), errors="replace")
    except Exception as error:  # noqa: BLE001 - striprtf raises anything on malformed RTF
        raise ValueError(f"unreadable RTF body: {type(error).__name__}: {error}") from None
    return RtfBody(text, None, defect)


def _encapsulated_html(rtf: bytes) -> str | None:
    """The HTML inside ``rtf``, or None when RTFDE cannot take it apart (the text is still read)."""
    try:
        extractor = DeEncapsulator(rtf)
        extractor.deencapsulate()
    except Exception:  # noqa: BLE001 - RTFDE raises its own and lark's errors on malformed RTF
        return None
    html = extractor.html
    if isinstance(html, bytes):
        html = html.decode("utf-8", errors="replace")
    return html or None
