"""``process_grouped``: the service's pass over many mails, a small group parsed at a time,
with each mail's result what ``process`` gives it alone."""

from __future__ import annotations

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import ClaimCheck
from services.classifier import core
from services.classifier.core import GROUP_BYTES, GROUP_MAILS, process, process_grouped
from tests.classifier.conftest import raw_record

MAIL = b"From: Anna <anna@example.com>\r\nSubject: Drucker %d\r\nMessage-ID: <m%d@example.com>\r\n\r\nGeht nicht.\r\n"
CHECKED = b"From: a@b.c\r\nSubject: aus dem Speicher\r\n\r\nbody\r\n"
CHECK = ClaimCheck(store="postgres", sha256="cd" * 32, size=len(CHECKED))


def load_claim_check(check: ClaimCheck) -> bytes:
    assert check == CHECK
    return CHECKED


def alone(mail, classifier):
    try:
        return process(mail, classifier, load_claim_check)
    except InvalidMessage as exc:
        return exc


def comparable(result):
    return (type(result).__name__, str(result)) if isinstance(result, InvalidMessage) else result


def test_each_mail_gets_what_it_gets_alone(classifier):
    mails = [raw_record(MAIL % (n, n)) for n in range(40)]
    mails[3] = raw_record(b"Subject: no sender\r\n\r\nbody\r\n")  # InvalidMessage: no sender
    mails[9] = raw_record(MAIL % (9, 9), size=classifier.limits.max_mail_bytes + 1)  # MailTooLarge, never loaded
    mails[33] = raw_record(CHECKED).model_copy(update={"raw": None, "claim_check": CHECK})
    mails[35] = raw_record(MAIL % (35, 35)).model_copy(update={"raw": None})  # neither bytes nor a claim check

    grouped = list(process_grouped(mails, classifier, load_claim_check))

    assert [comparable(r) for r in grouped] == [comparable(alone(m, classifier)) for m in mails]
    failed = {n: type(r).__name__ for n, r in enumerate(grouped) if isinstance(r, InvalidMessage)}
    assert failed == {3: "InvalidMessage", 9: "MailTooLarge", 35: "InvalidMessage"}


def stages_of(mails, classifier, monkeypatch) -> list[str]:
    """The order in which ``process_grouped`` parses mails and makes their outputs."""
    events: list[str] = []
    parse, encoded = core.parse_mail, core._encoded
    monkeypatch.setattr(core, "parse_mail", lambda raw, limits: events.append("parse") or parse(raw, limits))
    monkeypatch.setattr(core, "_encoded", lambda *args: events.append("output") or encoded(*args))
    results = process_grouped(iter(mails), classifier, load_claim_check)
    assert all(not isinstance(r, InvalidMessage) for r in results)
    return events


def runs(events: list[str]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for event in events:
        if found and found[-1][0] == event:
            found[-1] = (event, found[-1][1] + 1)
        else:
            found.append((event, 1))
    return found


def test_a_group_is_parsed_whole_before_its_mails_are_decided(classifier, monkeypatch):
    mails = [raw_record(MAIL % (n, n)) for n in range(GROUP_MAILS + 8)]
    assert runs(stages_of(mails, classifier, monkeypatch)) == [
        ("parse", GROUP_MAILS), ("output", GROUP_MAILS), ("parse", 8), ("output", 8)
    ]


def test_large_mails_end_a_group_early(classifier, monkeypatch):
    # Declared sizes decide: three of these pass the group's byte budget.
    size = GROUP_BYTES // 3 + 1
    mails = [raw_record(MAIL % (n, n), size=size) for n in range(7)]
    assert runs(stages_of(mails, classifier, monkeypatch)) == [
        ("parse", 3), ("output", 3), ("parse", 3), ("output", 3), ("parse", 1), ("output", 1)
    ]
