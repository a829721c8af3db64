"""The sender's pure core: an outbox row as a mail, and the retry schedule."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

import pytest

from services.sender.core import ClaimedMail, GiveUp, NotAMail, RetryLater, after_failure, outbound_message

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def claimed(**changes) -> ClaimedMail:
    fields = dict(
        id=1,
        attempts=1,
        kind="auto_answer",
        sender_name='Support "Desk", Köln',
        sender_address="support@helpdesk.example",
        recipient="max@example.com",
        subject="[#mi-10042] Wir haben Ihre Anfrage erhalten: Drucker",
        message_id="<mi-10042.6f1c0e7a9b2d4c35a1e8f0d2c4b6a890@helpdesk.example>",
        in_reply_to="<abc.123@customer.example>",
        body_text="Hallo Max,\n\nIhre Anfrage ist [#mi-10042].\n",
    )
    return ClaimedMail(**{**fields, **changes})


def reparsed(mail: ClaimedMail):
    wire = outbound_message(mail, NOW, "mi").as_bytes()
    assert b"\r\n" in wire and b"\n" not in wire.replace(b"\r\n", b""), "SMTP wants CRLF line ends only"
    return email.message_from_bytes(wire, policy=policy.default)


def test_an_auto_answer_carries_the_rfc_3834_and_threading_headers():
    message = reparsed(claimed())
    assert message["From"].addresses[0].display_name == 'Support "Desk", Köln'
    assert message["From"].addresses[0].addr_spec == "support@helpdesk.example"
    assert str(message["To"]) == "max@example.com"
    assert str(message["Subject"]) == "[#mi-10042] Wir haben Ihre Anfrage erhalten: Drucker"
    assert str(message["Message-ID"]) == "<mi-10042.6f1c0e7a9b2d4c35a1e8f0d2c4b6a890@helpdesk.example>"
    assert str(message["In-Reply-To"]) == str(message["References"]) == "<abc.123@customer.example>"
    assert str(message["Auto-Submitted"]) == "auto-replied"
    assert str(message["X-Auto-Response-Suppress"]) == "All"
    assert str(message["X-Mailintake-Instance"]) == "mi"
    assert message["Date"].datetime == NOW
    assert message.get_content().replace("\r\n", "\n") == "Hallo Max,\n\nIhre Anfrage ist [#mi-10042].\n"


def test_other_kinds_are_not_marked_automatic_and_a_mail_without_parent_does_not_thread():
    message = reparsed(claimed(kind="agent_reply", in_reply_to=None))
    assert message["Auto-Submitted"] is None and message["X-Auto-Response-Suppress"] is None
    assert message["In-Reply-To"] is None and message["References"] is None


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "hi\r\nBcc: victim@example.com"},
        {"subject": "hi\nBcc: victim@example.com"},
        {"sender_name": "Desk\r\nBcc: victim@example.com"},
        {"recipient": "max@example.com\r\nBcc: victim@example.com"},
        {"sender_address": "support@helpdesk.example\nBcc: victim@example.com"},
        {"message_id": "<x@y>\r\nBcc: victim@example.com"},
        {"in_reply_to": "<x@y>\r\nBcc: victim@example.com"},
    ],
)
def test_a_row_with_a_line_break_in_a_header_never_becomes_a_mail(changes):
    # The ticketer cleans every header value; this is the second line of defence for a
    # row written some other way.
    with pytest.raises(NotAMail, match="outbox row 1 cannot be a mail"):
        outbound_message(claimed(**changes), NOW, "mi")


def test_a_long_non_ascii_subject_is_encoded_and_folded_not_broken():
    subject = "Ärger mit dem Drucker " * 20
    message = reparsed(claimed(subject=subject.strip()))
    assert str(message["Subject"]) == subject.strip()


def test_retries_back_off_exponentially_up_to_the_cap_then_give_up():
    delays = [after_failure(n, False, max_attempts=6, base_seconds=30, max_seconds=300) for n in range(1, 7)]
    assert delays[:5] == [RetryLater(30), RetryLater(60), RetryLater(120), RetryLater(240), RetryLater(300)]
    assert isinstance(delays[5], GiveUp) and "after 6 attempts" in delays[5].reason


def test_a_permanent_refusal_is_not_retried():
    assert isinstance(after_failure(1, True, max_attempts=6, base_seconds=30, max_seconds=300), GiveUp)


def test_sender_settings_refuse_a_password_without_tls_and_half_credentials():
    from mailintake.runtime.settings import InvalidSettings, load_settings
    from services.sender.settings import SenderSettings

    with pytest.raises(InvalidSettings, match="MAILINTAKE_SENDER_SMTP_PASSWORD.*in clear"):
        load_settings(SenderSettings, smtp_security="none", smtp_username="u", smtp_password="p")
    with pytest.raises(InvalidSettings, match="MAILINTAKE_SENDER_SMTP_PASSWORD.*both"):
        load_settings(SenderSettings, smtp_username="u", smtp_password=None)
    with pytest.raises(InvalidSettings, match="MAILINTAKE_SENDER_LEASE_SECONDS"):
        load_settings(SenderSettings, smtp_timeout_seconds=60, lease_seconds=120)
