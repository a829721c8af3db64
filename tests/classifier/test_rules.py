import re

import pytest

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


# ---------------------------------------------------------------- marks, loops and replies

from mailintake.outbound_mail import format_outbound_message_id  # noqa: E402
from services.classifier.rules import Mark  # noqa: E402
from services.classifier.settings import LoopBulkDecision  # noqa: E402

OUR_ID = format_outbound_message_id("mi", 10042, "helpdesk.example.org", "6f1c0e7a9b2d4c35a1e8f0d2c4b6a890")


def headed(*headers: str, subject: str = "Printer", sender: str = "max@example.com") -> bytes:
    lines = [f"From: {sender}", f"Subject: {subject}", "Message-ID: <1@x>", *headers]
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def test_marking_rules_come_before_deciding_rules_and_the_last_always_decides():
    kinds = [rule.decision is None for rule in DECISION_TABLE]
    first_decider = kinds.index(False)
    assert all(kinds[:first_decider]) and not any(kinds[first_decider:])
    assert DECISION_TABLE[-1].check(None, None, None) is True


def test_every_mark_suppresses_the_auto_answer():
    for rule in DECISION_TABLE:
        if rule.marks:
            assert Mark.SUPPRESS_AUTO_ANSWER in rule.marks, rule.name


@pytest.mark.parametrize(
    ("header", "rule", "mark"),
    [
        ("Auto-Submitted: auto-generated", "auto-submitted", Mark.AUTO_SUBMITTED),
        ("Precedence: list", "precedence-bulk", Mark.BULK),
        ("List-Id: <a.lists.example>", "mailing-list", Mark.BULK),
        ("X-Loop: x", "x-loop", Mark.LOOP),
        ("Return-Path: < >", "empty-return-path", Mark.LOOP),
        ("X-Mailintake-Instance: other", "other-installation-mail", Mark.LOOP),
        ("X-Auto-Response-Suppress: OOF", "auto-response-suppressed", Mark.SUPPRESS_AUTO_ANSWER),
    ],
)
def test_marking_rules(header, rule, mark):
    outcome = decide(parse_mail(headed(header)), context())
    assert outcome.rules_fired == (rule, "new-ticket")
    assert mark in outcome.marks and Mark.SUPPRESS_AUTO_ANSWER in outcome.marks


@pytest.mark.parametrize("header", ["Auto-Submitted: no", "Precedence: first-class", "X-Auto-Response-Suppress: DR, RN"])
def test_headers_that_do_not_mark(header):
    outcome = decide(parse_mail(headed(header)), context())
    assert outcome.rules_fired == ("new-ticket",) and not outcome.marks


def reject_loops(**options) -> RuleContext:
    return RuleContext(
        options=TicketOptions(**options), instance_id="mi", reference_pattern=PATTERN,
        loop_bulk_decision=LoopBulkDecision.REJECT,
    )


def test_reject_policy_rejects_marked_mails_that_are_no_follow_up():
    outcome = decide(parse_mail(headed("Precedence: bulk")), reject_loops())
    assert outcome.decision is Decision.REJECT
    assert outcome.rules_fired == ("precedence-bulk", "loop-or-bulk-rejected")


def test_reject_policy_keeps_marked_follow_ups_and_unmarked_mails():
    follow_up = decide(parse_mail(headed("Auto-Submitted: auto-replied", subject="Re: [#mi-5] x")), reject_loops())
    assert follow_up.decision is Decision.FOLLOW_UP
    suppress_only = decide(parse_mail(headed("X-Auto-Response-Suppress: All")), reject_loops())
    assert suppress_only.decision is Decision.NEW_TICKET


def test_own_outbound_mail_is_rejected_even_with_a_reference():
    outcome = decide(parse_mail(headed("X-Mailintake-Instance: mi", subject="[#mi-5] Ihre Anfrage")), context())
    assert outcome.decision is Decision.REJECT
    assert outcome.rules_fired == ("own-outbound-mail",)


def test_in_reply_to_our_message_id_is_a_follow_up_to_its_ticket():
    outcome = decide(parse_mail(headed(f"In-Reply-To: {OUR_ID}", subject="Re: Ihre Anfrage")), context())
    assert outcome.decision is Decision.FOLLOW_UP
    assert outcome.ticket_reference == format_reference("mi", 10042)
    assert outcome.rules_fired == ("reply-to-our-message-id",)


def test_the_subject_reference_wins_over_the_message_id():
    outcome = decide(parse_mail(headed(f"In-Reply-To: {OUR_ID}", subject="Re: [#mi-7] x")), context())
    assert outcome.ticket_reference == "[#mi-7]"


def test_message_id_domains_restrict_which_ids_count_as_ours():
    mail = parse_mail(headed(f"References: {OUR_ID}", subject="Re: x"))
    elsewhere = RuleContext(TicketOptions(), "mi", PATTERN, message_id_domains=frozenset({"other.example"}))
    ours = RuleContext(TicketOptions(), "mi", PATTERN, message_id_domains=frozenset({"helpdesk.example.org"}))
    assert decide(mail, elsewhere).decision is Decision.NEW_TICKET
    assert decide(mail, ours).decision is Decision.FOLLOW_UP


def test_message_id_of_another_installation_is_no_reference():
    other = format_outbound_message_id("pt", 10042, "helpdesk.example.org", "6f1c0e7a9b2d4c35a1e8f0d2c4b6a890")
    outcome = decide(parse_mail(headed(f"In-Reply-To: {other}", subject="Re: x")), context())
    assert outcome.decision is Decision.NEW_TICKET
