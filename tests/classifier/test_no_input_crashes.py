"""Property: no input crashes the classifier; each ends as a decision or a dead letter.

Hypothesis builds mails (headers in any charset, encoded words, nested multiparts,
every transfer encoding, TNEF-looking attachments, DSNs) and corrupts them at the byte
level (flips, cuts, insertions, deletions). Each goes through exactly what the stream
loop runs for one record (``StreamProcessor._outputs``): ``decode_raw`` then the
service's ``grouped_handler``; an ``InvalidMessage`` becomes the loop's dead letter.
Any other exception fails the test, as it would crash the service.
"""

from __future__ import annotations

import datetime as dt
import struct

from aiokafka import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import MailRaw, SenderIdentity, TicketOptions, decode_record, encode_record
from mailintake.runtime.stream_processor import DLQ_TOPIC, dead_letter
from services.classifier.core import Classifier
from services.classifier.parsing import ParseLimits
from services.classifier.service import decode_raw, grouped_handler
from services.classifier.settings import ClassifierSettings

CLASSIFIER = Classifier.from_settings(ClassifierSettings())
# Small body limits, so truncation is exercised too.
SMALL_LIMITS = Classifier.from_settings(ClassifierSettings(max_body_text_bytes=1024, max_body_html_bytes=1024))
PROPERTY_SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _no_claim_check(check):  # noqa: ANN001, ANN202
    raise AssertionError("inline records need no claim check")


def _message(value: bytes, offset: int = 42) -> ConsumerRecord:
    return ConsumerRecord(
        topic="mail.raw", partition=3, offset=offset, timestamp=0, timestamp_type=0, key=b"support",
        value=value, headers=[], checksum=None, serialized_key_size=7, serialized_value_size=len(value),
    )


def handle_like_the_stream_loop(value: bytes, classifier: Classifier = CLASSIFIER):
    """What ``StreamProcessor._outputs`` does with one record: outputs, or a dead letter."""
    message = _message(value)
    try:
        (result,) = grouped_handler(classifier, _no_claim_check)([(decode_raw(value), message)])
    except InvalidMessage as error:  # not a mail.raw record
        return None, dead_letter("classifier", message, str(error), error)
    if isinstance(result, InvalidMessage):
        return None, dead_letter("classifier", message, str(result), result)
    return result, None


def _mail_raw_value(raw: bytes) -> bytes:
    mail = MailRaw(
        account_id="support", account_name="IT Support", protocol="IMAP", source_id="imap:1:2",
        poll_cycle=1, poll_interval_seconds=60, fetched_at=dt.datetime(2024, 12, 2, tzinfo=dt.UTC),
        size=len(raw), raw=raw, sender_identity=SenderIdentity(), ticket_options=TicketOptions(),
    )
    return encode_record("mail.raw", mail)


def assert_ends_well(value: bytes, classifier: Classifier = CLASSIFIER) -> None:
    outputs, letter = handle_like_the_stream_loop(value, classifier)
    if letter is not None:
        assert letter.topic == DLQ_TOPIC
        decoded = decode_record(DLQ_TOPIC, letter.value)
        assert (decoded.service, decoded.source_topic, decoded.source_partition, decoded.source_offset) == (
            "classifier", "mail.raw", 3, 42
        )
        assert decoded.reason and decoded.exception_type
        # parse_mail turns any exception from deep inside the email package into
        # UnparseableMail, a safety net for production. Here it must never be needed:
        # it would also hide bugs of our own as dead letters.
        assert decoded.exception_type != "services.classifier.parsing.UnparseableMail", decoded.reason
        assert decoded.original_value == value
        return
    (output,) = outputs
    decision = decode_record("mail.classified", output.value)
    assert decision.sender and "\x00" not in decision.body_text
    assert len(output.value) < 2 * 1024 * 1024, "a decision must fit mail.classified's record limit"
    # PostgreSQL and UTF-8 must take every string the ticketer stores.
    for text in (decision.subject, decision.body_text, decision.body_html or "", decision.sender_name or ""):
        text.encode("utf-8")
        assert "\x00" not in text


# ------------------------------------------------------------------ generated mails

_charsets = st.sampled_from(
    ["utf-8", "iso-8859-1", "windows-1252", "koi8-r", "shift_jis", "iso-2022-jp", "utf-16", "x-unknown", "", "utf8mb4", "gb2312"]
)
_encodings = st.sampled_from(["7bit", "8bit", "base64", "quoted-printable", "binary", "x-uuencode", "bogus", ""])
_text = st.text(st.characters(codec="utf-8"), max_size=120)
_raw_bytes = st.binary(max_size=200)


@st.composite
def _header_value(draw) -> bytes:
    kind = draw(st.sampled_from(["plain", "encoded", "raw8bit", "address", "junk"]))
    text = draw(_text)
    if kind == "plain":
        return text.encode("utf-8", "surrogatepass")
    if kind == "encoded":
        charset = draw(_charsets)
        letter = draw(st.sampled_from(["B", "Q", "b", "x"]))
        payload = draw(st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?"), max_size=40))
        return f"=?{charset}?{letter}?{payload}?= {text}".encode("utf-8", "surrogatepass")
    if kind == "raw8bit":
        return draw(_raw_bytes).replace(b"\r", b"").replace(b"\n", b"")
    if kind == "address":
        local = draw(st.sampled_from(['"a b"', "x", "MAILER-DAEMON", "", "é"]))
        domain = draw(st.sampled_from(["example.com", "xn--mnchen-3ya.de", "xn--zz-", "münchen.de", ""]))
        return f'{text} <{local}@{domain}>, "{text}" <other@x.y>'.encode("utf-8", "surrogatepass")
    return draw(_raw_bytes)


_header_names = st.sampled_from(
    [
        "From", "Sender", "Return-Path", "Subject", "Message-ID", "In-Reply-To", "References", "Content-Type",
        "Content-Transfer-Encoding", "Content-Disposition", "Auto-Submitted", "Precedence", "List-Id",
        "X-Priority", "Importance", "X-Loop", "X-Mailintake-Instance", "X-Auto-Response-Suppress", "MIME-Version",
    ]
)


@st.composite
def _headers(draw) -> bytes:
    # Mostly a usable From, so that most mails get past the sender check to the MIME walk.
    sender = draw(st.one_of(st.just(b"Anna <anna@example.com>"), _header_value()))
    lines = [b"From: " + sender] if draw(st.integers(0, 9)) else []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(_header_names).encode()
        value = draw(_header_value())
        if draw(st.booleans()):
            value = value[: len(value) // 2] + b"\r\n\t" + value[len(value) // 2 :]  # folded
        lines.append(name + b": " + value)
    return b"\r\n".join(lines) + b"\r\n"


_content_types = st.sampled_from(
    [
        "text/plain", "text/html", "application/pdf", "image/png", "application/ms-tnef", "message/rfc822",
        "message/delivery-status", "text/rfc822-headers", "multipart/mixed", "multipart/alternative",
        "multipart/related", "multipart/report; report-type=delivery-status", "text/calendar", "bogus",
    ]
)


@st.composite
def _part(draw, depth: int) -> bytes:
    content_type = draw(_content_types)
    charset = draw(_charsets)
    disposition = draw(st.sampled_from([b"", b"Content-Disposition: attachment; filename=\"f.bin\"\r\n",
                                        b"Content-Disposition: inline; filename*=utf-8''%C3%A4.txt\r\n",
                                        b"Content-Disposition: attachment; filename=winmail.dat\r\n"]))
    if content_type.startswith("multipart/") and depth < 3:
        boundary = draw(st.sampled_from(["b1", "b2", "=_x", "a" * 70, ""]))
        children = draw(st.lists(_part(depth + 1), max_size=3))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + child + b"\r\n" for child in children)
        if draw(st.booleans()):
            body += b"--" + boundary.encode() + b"--\r\n"
        head = f'Content-Type: {content_type}; boundary="{boundary}"\r\n'.encode()
        return head + disposition + b"\r\n" + body
    encoding = draw(_encodings)
    if content_type == "message/rfc822" and depth < 3:
        body = draw(_headers()) + b"\r\n" + draw(_part(depth + 1))
    elif content_type == "application/ms-tnef":
        body = struct.pack("<IH", 0x223E9F78, 1) + draw(_raw_bytes)
    else:
        text = draw(_text)
        body = text.encode(charset or "utf-8", "replace") if charset and charset not in ("x-unknown", "utf8mb4") else draw(_raw_bytes)
    if encoding == "base64" and draw(st.booleans()):
        import base64

        body = base64.encodebytes(body)
    head = f"Content-Type: {content_type}; charset={charset}\r\nContent-Transfer-Encoding: {encoding}\r\n".encode()
    return head + disposition + b"\r\n" + body


@st.composite
def mails(draw) -> bytes:
    return draw(_headers()) + b"MIME-Version: 1.0\r\n" + draw(_part(0))


@st.composite
def corrupted(draw, source) -> bytes:
    data = bytearray(draw(source))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=20))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 50))]
    return bytes(data)


@PROPERTY_SETTINGS
@given(mails())
def test_generated_mails_end_as_a_decision_or_a_dead_letter(raw):
    assert_ends_well(_mail_raw_value(raw))


@PROPERTY_SETTINGS
@given(corrupted(mails()))
def test_corrupted_mails_end_as_a_decision_or_a_dead_letter(raw):
    assert_ends_well(_mail_raw_value(raw), SMALL_LIMITS)


@PROPERTY_SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_as_a_mail_end_as_a_decision_or_a_dead_letter(raw):
    assert_ends_well(_mail_raw_value(raw))


@settings(max_examples=150, deadline=None)
@given(corrupted(st.builds(_mail_raw_value, mails())))
def test_corrupted_mail_raw_records_end_as_a_decision_or_a_dead_letter(value):
    assert_ends_well(value)


def test_a_mail_without_any_sender_is_dead_lettered_with_where_it_came_from():
    value = _mail_raw_value(b"Subject: who?\r\n\r\nnobody\r\n")
    outputs, letter = handle_like_the_stream_loop(value)
    assert outputs is None
    decoded = decode_record(DLQ_TOPIC, letter.value)
    assert decoded.reason == "mail has no sender address in From, Sender or Return-Path"
    assert decoded.exception_type == "mailintake.contracts.errors.InvalidMessage"


def test_a_record_that_is_no_mail_raw_value_is_dead_lettered():
    outputs, letter = handle_like_the_stream_loop(b"\x00\x00\x00\x00\x01garbage")
    assert outputs is None
    assert "body is not a record of schema id 1" in decode_record(DLQ_TOPIC, letter.value).reason


def test_limits_used_here_are_the_settings_limits():
    # The truncation property above only means something if the limits are small.
    assert SMALL_LIMITS.limits == ParseLimits(64 * 1024 * 1024, 1024, 1024)
