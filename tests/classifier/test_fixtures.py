"""Every .eml fixture through the service's own ``process``, against fixtures/expected.yaml.

The fixtures are mails as real clients and systems write them (Outlook, Gmail, Apple
Mail, phones, ticket systems, monitoring, mailing lists, bounces, auto-replies) and
broken ones (missing boundaries, charset lies, truncation). Each is encoded to a real
mail.raw record, classified, and the mail.classified record decoded again, so the
Avro round trip is part of every check.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import MailRaw, SenderIdentity, TicketOptions, decode_record, encode_record
from services.classifier.core import Classifier, process
from services.classifier.settings import ClassifierSettings

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = yaml.safe_load((FIXTURES / "expected.yaml").read_text(encoding="utf-8"))
MARKS = ("auto_submitted", "bulk", "loop", "bounce", "suppress_auto_answer")
SPECIAL = {
    "options", "settings", "dead_letter", "marks", "attachments", "defects_contain",
    "body_text_contains", "body_html_contains", "body_html_lacks", "subject_length",
}


def _record(raw: bytes, options: dict) -> MailRaw:
    mail = MailRaw(
        account_id="support",
        account_name="IT Support",
        protocol="IMAP",
        source_id="imap:1711380000:4711",
        poll_cycle=7,
        poll_interval_seconds=60,
        fetched_at=dt.datetime(2024, 12, 2, 9, 0, tzinfo=dt.UTC),
        size=len(raw),
        raw=raw,
        sender_identity=SenderIdentity(name="IT Support", address="support@helpdesk.example.org"),
        ticket_options=TicketOptions(**options),
    )
    # Through the wire format, as the service receives it.
    return decode_record("mail.raw", encode_record("mail.raw", mail))


def test_there_are_at_least_sixty_fixtures_and_each_has_an_expectation():
    names = {p.name for p in FIXTURES.glob("*.eml")}
    assert len(names) >= 60
    assert names == set(EXPECTED), f"without expectation: {names - set(EXPECTED)}; without file: {set(EXPECTED) - names}"


def _no_claim_check(check):  # noqa: ANN001, ANN202
    raise AssertionError(f"inline fixtures need no claim check, asked for {check}")


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=str)
def test_fixture(name):
    expected = EXPECTED[name]
    classifier = Classifier.from_settings(ClassifierSettings(**expected.get("settings", {})))
    mail = _record((FIXTURES / name).read_bytes(), expected.get("options", {}))

    if "dead_letter" in expected:
        with pytest.raises(InvalidMessage) as error:
            process(mail, classifier, _no_claim_check)
        assert expected["dead_letter"] in str(error.value)
        return

    key, value = process(mail, classifier, _no_claim_check)
    decision = decode_record("mail.classified", value)
    got = decision.model_dump(mode="json")

    assert decision.decision.value == expected["decision"]
    assert list(decision.rules_fired) == expected["rules_fired"]
    assert [m for m in MARKS if got[m]] == [m for m in MARKS if m in expected.get("marks", [])]
    assert key.decode() == (decision.bundle_key or decision.ticket_reference or f"support:{mail.source_id}")
    for field, want in expected.items():
        if field in SPECIAL or field in ("decision", "rules_fired"):
            continue
        assert got[field] == want, f"{field}: {got[field]!r} != {want!r}"
    for piece in expected.get("body_text_contains", []):
        assert piece in decision.body_text
    for piece in expected.get("body_html_contains", []):
        assert piece in (decision.body_html or "")
    for piece in expected.get("body_html_lacks", []):
        assert piece not in (decision.body_html or "")
    for piece in expected.get("defects_contain", []):
        assert any(piece in defect for defect in decision.parse_defects), decision.parse_defects
    if "subject_length" in expected:
        assert len(decision.subject) == expected["subject_length"]
    if "attachments" in expected:
        attachments = got["attachments"]
        assert len(attachments) == len(expected["attachments"]), attachments
        for have, want in zip(attachments, expected["attachments"]):
            assert {k: have[k] for k in want} == want
