import re

from mailintake.contracts.records import Decision, TicketOptions
from services.classifier.core import bundle_key
from services.classifier.parsing import parse_mail
from services.classifier.rules import DECISION_TABLE, RuleContext, decide
from services.classifier.settings import ClassifierSettings
from services.ticketer.core import format_reference, reference_number

PATTERN = re.compile(ClassifierSettings().reference_pattern)


def mail(subject: str, sender: str = "Max <max@example.com>") -> bytes:
    return f"From: {sender}\r\nTo: desk@example.org\r\nSubject: {subject}\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n".encode()


def context(**options) -> RuleContext:
    return RuleContext(options=TicketOptions(**options), instance_id="mi", reference_pattern=PATTERN)


def test_every_rule_is_named_and_described():
    names = [rule.name for rule in DECISION_TABLE]
    assert len(names) == len(set(names))
    assert all(rule.description for rule in DECISION_TABLE)


def test_reference_the_ticketer_writes_is_found_as_a_follow_up():
    reference = format_reference("mi", 10042)
    outcome = decide(parse_mail(mail(f"Re: Printer {reference}")), context())
    assert outcome.decision is Decision.FOLLOW_UP
    assert outcome.ticket_reference == reference
    assert reference_number(outcome.ticket_reference) == 10042
    assert outcome.rules_fired == ("ticket-reference-in-subject",)


def test_reference_of_another_installation_counts_as_none():
    outcome = decide(parse_mail(mail("Re: Printer [#other-10042]")), context())
    assert outcome.decision is Decision.NEW_TICKET
    assert outcome.ticket_reference is None


def test_no_new_tickets_rejects_a_mail_without_reference_with_a_reason():
    outcome = decide(parse_mail(mail("Printer")), context(no_new_tickets=True))
    assert outcome.decision is Decision.REJECT
    assert outcome.rules_fired == ("no-new-tickets",)
    assert "follow-ups only" in outcome.reason


def test_no_new_tickets_still_accepts_follow_ups():
    outcome = decide(parse_mail(mail("Re: [#mi-7]")), context(no_new_tickets=True))
    assert outcome.decision is Decision.FOLLOW_UP


def test_bundle_key_separates_parts_unambiguously():
    assert bundle_key("a", "b@c", "x,y") != bundle_key("a", "b@c,x", "y")
