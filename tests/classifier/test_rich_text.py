"""Compressed RTF bodies (winmail.dat): converted to text or HTML, and never a crash.

The whole path, from a mail to its decision, is in the ``outlook-winmail-dat-rtf-*``
fixtures (test_fixtures.py); these check the converter's limits and its broken input.
"""

from __future__ import annotations

import struct

from compressed_rtf import compress
from hypothesis import given, settings
from hypothesis import strategies as st

from services.classifier import rich_text
from services.classifier.rich_text import RtfBody, rtf_body
from tests.classifier.tnef_writer import FIXTURES, HTML_IN_RTF, RICH_TEXT, fixtures


def test_the_committed_fixtures_are_what_the_writer_writes():
    for name, data in fixtures().items():
        assert (FIXTURES / name).read_bytes() == data, f"{name}: run python -m tests.classifier.tnef_writer"


def test_rich_text_becomes_text_and_html_in_rtf_becomes_html():
    assert rtf_body(compress(RICH_TEXT)).text.startswith("Guten Tag,\n\nder Scanner im 3. Stock meldet Störung E-204")
    html = rtf_body(compress(HTML_IN_RTF))
    assert html.text is None and "<b>VPN-Zugang</b> läuft morgen ab.</p>" in html.html


def test_an_announced_size_over_the_limit_is_refused_before_decompressing():
    compressed = bytearray(compress(RICH_TEXT))
    struct.pack_into("<I", compressed, 4, rich_text.MAX_RTF_BYTES + 1)
    try:
        rtf_body(bytes(compressed))
    except ValueError as error:
        assert f"RTF body of {rich_text.MAX_RTF_BYTES + 1} bytes is larger than" in str(error)
    else:
        raise AssertionError("an oversized RTF body was converted")


def test_html_in_rtf_over_its_limit_is_read_as_text_and_says_so(monkeypatch):
    monkeypatch.setattr(rich_text, "MAX_HTML_RTF_BYTES", 100)
    body = rtf_body(compress(HTML_IN_RTF))
    assert body.html is None and "das Kennwort für VPN-Zugang läuft morgen ab." in body.text
    assert body.defect is not None and "read as text" in body.defect


def test_a_header_alone_is_no_body():
    try:
        rtf_body(b"\x00" * 10)
    except ValueError as error:
        assert "shorter than its 16-byte header" in str(error)
    else:
        raise AssertionError("ten bytes were taken for compressed RTF")


def _outcome(data: bytes) -> RtfBody | ValueError:
    try:
        return rtf_body(data)
    except ValueError as error:
        return error


@settings(max_examples=300, deadline=None)
@given(
    source=st.sampled_from([RICH_TEXT, HTML_IN_RTF]),
    compressed=st.booleans(),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=6),
    cut=st.integers(0, 10_000),
)
def test_corrupted_rtf_is_a_body_or_a_value_error(source, compressed, flips, cut):
    data = bytearray(compress(source, compressed=compressed))
    for position, mask in flips:
        data[position % len(data)] ^= mask
    result = _outcome(bytes(data[: max(cut, 16)]))
    assert isinstance(result, (RtfBody, ValueError))
    if isinstance(result, RtfBody):
        assert (result.text is None) != (result.html is None)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_are_a_body_or_a_value_error(data):
    assert isinstance(_outcome(data), (RtfBody, ValueError))
