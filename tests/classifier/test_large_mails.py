"""Big mails: a 20 MB attachment is measured, not decoded; the hard limit dead-letters;
bodies are cut to what mail.classified can carry. The mails are made here, not stored."""

from __future__ import annotations

import base64
import os
import tracemalloc

import pytest

from mailintake.contracts.records import ClaimCheck, decode_record
from services.classifier.core import Classifier, process
from services.classifier.parsing import MailTooLarge, ParseLimits, parse_mail
from services.classifier.settings import ClassifierSettings

MIB = 1024 * 1024


def mail_with_attachment(attachment_bytes: int, text: str = "Siehe Anhang.") -> bytes:
    # Random bytes, so nothing along the way could compress or shortcut them.
    payload = base64.encodebytes(os.urandom(attachment_bytes)).replace(b"\n", b"\r\n")
    return (
        b"From: Anna Schmidt <anna@example.com>\r\nSubject: Grosser Anhang\r\nMessage-ID: <big@example.com>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text.encode() + b"\r\n"
        b"--B\r\nContent-Type: application/zip; name=logs.zip\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=logs.zip\r\n\r\n" + payload + b"--B--\r\n"
    )


def parsed_with_peak(raw: bytes):
    """``parse_mail(raw)`` and the most memory it held at once, as ``tracemalloc`` counts it."""
    tracemalloc.start()
    try:
        parsed = parse_mail(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return parsed, peak


def test_a_20_mb_attachment_is_measured_exactly_within_bounded_memory():
    raw = mail_with_attachment(20 * MIB)
    parsed, peak = parsed_with_peak(raw)
    (attachment,) = parsed.attachments
    assert (attachment.filename, attachment.size) == ("logs.zip", 20 * MIB)
    assert parsed.body_text == "Siehe Anhang."
    # The parser keeps the encoded attachment once (about 1.37 x 20 MiB) plus its line
    # list while reading it; decoding it would add another 20 MiB on top.
    assert peak < 3.5 * len(raw), f"peak {peak / MIB:.0f} MiB for a {len(raw) / MIB:.0f} MiB mail"


def test_a_20_mb_single_part_file_is_measured_without_the_parser_s_line_list():
    # A scanner's mail: the file is the whole mail, not a part of a multipart.
    payload = base64.encodebytes(os.urandom(20 * MIB)).replace(b"\n", b"\r\n")
    raw = (
        b"From: Scanner <scan@example.com>\r\nSubject: Scan\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/pdf; name=scan.pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=scan.pdf\r\n\r\n" + payload
    )
    parsed, peak = parsed_with_peak(raw)
    (attachment,) = parsed.attachments
    assert (attachment.filename, attachment.size) == ("scan.pdf", 20 * MIB)
    # The body is taken as one string (~1 x the mail), which get_payload() encodes once
    # more to look for escaped bytes (~1 x); fed line by line, the parser's line list
    # came on top: 2.7 x.
    assert peak < 2.4 * len(raw), f"peak {peak / MIB:.0f} MiB for a {len(raw) / MIB:.0f} MiB mail"


def test_a_mail_over_the_hard_limit_is_dead_lettered_before_it_is_loaded(make_raw_record):
    classifier = Classifier.from_settings(ClassifierSettings(max_mail_bytes=4096))
    record = make_raw_record(b"From: a@b.c\r\n\r\nx", size=5000).model_copy(
        update={"raw": None, "claim_check": ClaimCheck(store="postgres", sha256="ab" * 32, size=5000)}
    )

    def load(check):  # noqa: ANN001, ANN202
        raise AssertionError("a mail over the limit must not be loaded")

    with pytest.raises(MailTooLarge, match="5000 bytes is larger than the limit of 4096 bytes"):
        process(record, classifier, load)


def test_a_mail_larger_than_declared_is_still_held_to_the_limit():
    with pytest.raises(MailTooLarge):
        parse_mail(mail_with_attachment(8192), ParseLimits(max_mail_bytes=4096))


def test_claim_checked_mails_are_loaded_from_the_store(make_raw_record, classifier):
    raw = b"From: a@b.c\r\nSubject: s\r\n\r\nbody\r\n"
    check = ClaimCheck(store="postgres", sha256="cd" * 32, size=len(raw))
    record = make_raw_record(raw).model_copy(update={"raw": None, "claim_check": check})
    _, value = process(record, classifier, lambda c: raw if c == check else b"")
    assert decode_record("mail.classified", value).body_text == "body\n"


def test_long_bodies_are_cut_to_the_limits_and_marked(make_raw_record):
    classifier = Classifier.from_settings(ClassifierSettings(max_body_text_bytes=2048, max_body_html_bytes=4096))
    text = "Zeile mit Umlauten äöü\n" * 20_000
    html = "<p>" + "Absatz mit Text " * 30_000 + "</p>"
    raw = (
        "From: a@b.c\r\nSubject: lang\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=A\r\n\r\n"
        f"--A\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.encodebytes(text.encode()).decode()}\r\n"
        f"--A\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--A--\r\n"
    ).encode()
    _, value = process(make_raw_record(raw), classifier, None)
    decision = decode_record("mail.classified", value)
    assert decision.body_truncated
    assert 2000 < len(decision.body_text.encode()) <= 2048
    assert decision.body_text.startswith("Zeile mit Umlauten äöü\n")
    assert len(decision.body_html.encode()) <= 4096


@pytest.mark.parametrize("encoding", ["8bit", "binary", "7bit"])
@pytest.mark.parametrize(
    ("charset", "line"),
    [("utf-8", "Grüße aus Köln ✓"), ("iso-8859-1", "café crème brûlée"), ("windows-1251", "Привет из Москвы")],
)
@pytest.mark.parametrize("lines", [3, 2_000])
def test_8bit_bodies_are_read_by_their_charset_short_or_over_the_limit(encoding, charset, line, lines):
    # Under an identity transfer encoding the body's bytes are read as they are (no
    # decoding by the stdlib); a body over the limit is cut as bytes, then decoded.
    limits = ParseLimits(max_body_text_bytes=4096)
    text = "\r\n".join([line] * lines)
    raw = (
        f"From: a@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode() + text.encode(charset)
    parsed = parse_mail(raw, limits)
    expected = "\n".join([line] * lines)
    if lines == 3:
        assert parsed.body_text == expected
        assert not parsed.body_truncated
    else:
        assert parsed.body_truncated
        assert 4000 < len(parsed.body_text.encode()) <= 4096
        assert expected.startswith(parsed.body_text)
    assert parsed.defects == ()


@pytest.mark.parametrize(
    ("encoding", "body", "limit"),
    [
        # 16,388 bytes of the 8-bit body are read (4 x 4,096 + 4): the cut falls inside a
        # three-byte character.
        ("8bit", "✓" * 10_000, 4096),
        # 16,392 characters of the base64 are read, 12,135 bytes once decoded: the cut
        # falls inside a two-byte character.
        ("base64", "ä" * 10_000, 4097),
    ],
)
def test_a_body_cut_inside_a_character_keeps_its_charset(encoding, body, limit):
    data = body.encode("utf-8")
    payload = base64.encodebytes(data).decode() if encoding == "base64" else data.decode()
    raw = (
        "From: a@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{payload}"
    ).encode()
    parsed = parse_mail(raw, ParseLimits(max_body_text_bytes=limit))
    assert parsed.body_truncated
    assert set(parsed.body_text) == set(body)
    assert limit - 6 < len(parsed.body_text.encode()) <= limit
    assert parsed.defects == ()
