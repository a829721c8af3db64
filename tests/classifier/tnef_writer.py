"""Writes the RTF-only winmail.dat fixtures (``fixtures/outlook-winmail-dat-rtf-*.eml``).

Outlook sends a mail as TNEF when it keeps its rich text for another Outlook: the body is
then only ``PR_RTF_COMPRESSED`` inside the TNEF stream, no text or HTML part. No library
here writes TNEF, so this module builds the stream from Microsoft's specification
[MS-OXTNEF] (signature, legacy key, then attributes: level, id, length, data, checksum;
the message's MAPI properties in ``attMsgProps``), and the compressed RTF with the
``compressed_rtf`` package [MS-OXRTFCP]. The RTF bodies are written as Outlook writes
them: plain rich text, and HTML encapsulated in RTF (``\\fromhtml1``) [MS-OXRTFEX].

The files it writes were checked with a second, independent reader, Debian's ``tnef``
(``tnef --save-body``, package tnef), besides tnefparse. Run it from the repository root to write
the fixtures again (the output is the same every time)::

    .venv/bin/python -m tests.classifier.tnef_writer
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path

from compressed_rtf import compress

FIXTURES = Path(__file__).parent / "fixtures"

SIGNATURE = 0x223E9F78
LEVEL_MESSAGE = 1
LEVEL_ATTACHMENT = 2
# Attribute ids: the low word names it, the high word is its type.
ATT_TNEF_VERSION = 0x00089006
ATT_OEM_CODEPAGE = 0x00069007
ATT_MESSAGE_CLASS = 0x00078008
ATT_MSG_PROPS = 0x00069003
ATT_ATTACH_REND_DATA = 0x00069002
ATT_ATTACH_TITLE = 0x00018010
ATT_ATTACH_DATA = 0x0006800F
# MAPI property tags (type, id).
PT_BINARY = 0x0102
PT_BOOLEAN = 0x000B
PR_RTF_COMPRESSED = 0x1009
PR_RTF_IN_SYNC = 0x0E1F


def _attribute(level: int, attribute_id: int, data: bytes) -> bytes:
    checksum = sum(data) & 0xFFFF
    return struct.pack("<BII", level, attribute_id, len(data)) + data + struct.pack("<H", checksum)


def _padded(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _msg_props(rtf_compressed: bytes) -> bytes:
    props = [
        struct.pack("<HHI", PT_BOOLEAN, PR_RTF_IN_SYNC, 1),
        struct.pack("<HHII", PT_BINARY, PR_RTF_COMPRESSED, 1, len(rtf_compressed)) + _padded(rtf_compressed),
    ]
    return struct.pack("<I", len(props)) + b"".join(props)


def tnef(rtf_compressed: bytes, attachments: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    """A TNEF stream whose only body is ``rtf_compressed``, with ``attachments`` (name, data)."""
    out = struct.pack("<IH", SIGNATURE, 0x0001)
    out += _attribute(LEVEL_MESSAGE, ATT_TNEF_VERSION, struct.pack("<I", 0x00010000))
    out += _attribute(LEVEL_MESSAGE, ATT_OEM_CODEPAGE, struct.pack("<II", 1252, 0))
    out += _attribute(LEVEL_MESSAGE, ATT_MESSAGE_CLASS, b"IPM.Microsoft Mail.Note\x00")
    out += _attribute(LEVEL_MESSAGE, ATT_MSG_PROPS, _msg_props(rtf_compressed))
    for name, data in attachments:
        # attAttachRendData: attachment type 1 (file), position, width, height, flags.
        out += _attribute(LEVEL_ATTACHMENT, ATT_ATTACH_REND_DATA, struct.pack("<HIhhI", 1, 0xFFFFFFFF, 0, 0, 0))
        out += _attribute(LEVEL_ATTACHMENT, ATT_ATTACH_TITLE, name.encode("cp1252") + b"\x00")
        out += _attribute(LEVEL_ATTACHMENT, ATT_ATTACH_DATA, data)
    return out


RICH_TEXT = (
    rb"{\rtf1\ansi\ansicpg1252\deff0\deflang1031{\fonttbl{\f0\fswiss\fcharset0 Calibri;}}"
    rb"{\colortbl;\red0\green0\blue0;}"
    b"\r\n"
    rb"\viewkind4\uc1\pard\f0\fs22 Guten Tag,\par"
    b"\r\n"
    rb"\par der Scanner im 3. Stock meldet \b St\'f6rung E-204\b0  und zieht kein Papier ein.\par"
    b"\r\n"
    rb"\par Viele Gr\'fc\'dfe\par J\'fcrgen Wei\'df\par"
    b"\r\n}"
)

HTML_IN_RTF = (
    rb"{\rtf1\ansi\ansicpg1252\fromhtml1 \fbidis \deff0{\fonttbl{\f0\fswiss Arial;}{\f1\fmodern Courier New;}}"
    b"\r\n"
    rb"{\*\htmltag19 <html>}{\*\htmltag34 <head>}{\*\htmltag41 </head>}{\*\htmltag50 <body>}"
    b"\r\n"
    rb"{\*\htmltag64 <p>}\htmlrtf {\htmlrtf0 Hallo Support-Team,"
    rb"\htmlrtf\par}\htmlrtf0{\*\htmltag72 </p>}"
    b"\r\n"
    rb"{\*\htmltag64 <p>}\htmlrtf {\htmlrtf0 das Kennwort f\'fcr {\*\htmltag84 <b>}\htmlrtf {\b \htmlrtf0 VPN-Zugang"
    rb"\htmlrtf }\htmlrtf0{\*\htmltag92 </b>} l\'e4uft morgen ab."
    rb"\htmlrtf\par}\htmlrtf0{\*\htmltag72 </p>}"
    b"\r\n"
    rb"{\*\htmltag64 <p>}\htmlrtf {\htmlrtf0 Gr\'fc\'dfe, Anna"
    rb"\htmlrtf\par}\htmlrtf0{\*\htmltag72 </p>}"
    b"\r\n"
    rb"{\*\htmltag64 <script>}\htmlrtf {\htmlrtf0 alert(1)\htmlrtf }\htmlrtf0{\*\htmltag72 </script>}"
    b"\r\n"
    rb"{\*\htmltag58 </body>}{\*\htmltag27 </html>}}"
)


def broken_compressed_rtf() -> bytes:
    """A compressed RTF header that announces more data than follows, with a wrong CRC."""
    good = compress(RICH_TEXT, compressed=True)
    return good[:16] + bytes(b ^ 0x5A for b in good[16:40])


def mail(subject: str, message_id: str, winmail: bytes, sender: str) -> bytes:
    encoded = base64.encodebytes(winmail).decode().replace("\n", "\r\n")
    boundary = "----=_NextPart_000_0017_01DB4A10.6F3C2E90"
    return (
        f"From: {sender}\r\n"
        "To: support@helpdesk.example.org\r\n"
        f"Subject: {subject}\r\n"
        "Date: Mon, 9 Dec 2024 08:12:00 +0100\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "X-Mailer: Microsoft Outlook 16.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
        "\r\n"
        "This is a multi-part message in MIME format.\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        'Content-Type: application/ms-tnef; name="winmail.dat"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="winmail.dat"\r\n'
        "\r\n"
        f"{encoded}"
        f"--{boundary}--\r\n"
    ).encode("ascii")


def fixtures() -> dict[str, bytes]:
    """File name -> bytes of every fixture this module writes."""
    log = b"2024-12-09 08:01:13 E-204 paper feed\r\n" * 8
    return {
        "outlook-winmail-dat-rtf-only.eml": mail(
            "Scanner 3. OG",
            "<000101db4a10$6f3c2e90$4db48bb0$@technik.example.com>",
            tnef(compress(RICH_TEXT, compressed=True), (("fehlerprotokoll.txt", log),)),
            "=?iso-8859-1?q?J=FCrgen_Wei=DF?= <j.weiss@technik.example.com>",
        ),
        "outlook-winmail-dat-rtf-html.eml": mail(
            "VPN-Kennwort",
            "<000201db4a10$6f3c2e90$4db48bb0$@vertrieb.example.com>",
            tnef(compress(HTML_IN_RTF, compressed=True)),
            "Anna Roth <a.roth@vertrieb.example.com>",
        ),
        "outlook-winmail-dat-rtf-uncompressed.eml": mail(
            "Scanner 3. OG (unkomprimiert)",
            "<000301db4a10$6f3c2e90$4db48bb0$@technik.example.com>",
            tnef(compress(RICH_TEXT, compressed=False)),
            "j.weiss@technik.example.com",
        ),
        "outlook-winmail-dat-rtf-broken.eml": mail(
            "Scanner kaputt",
            "<000401db4a10$6f3c2e90$4db48bb0$@technik.example.com>",
            tnef(broken_compressed_rtf()),
            "j.weiss@technik.example.com",
        ),
    }


if __name__ == "__main__":
    for name, data in fixtures().items():
        (FIXTURES / name).write_bytes(data)
        print(f"wrote {FIXTURES / name} ({len(data)} bytes)")
