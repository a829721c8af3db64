"""The auto-answer plan and its templates, without a database."""

from __future__ import annotations

from datetime import UTC, datetime

import hypothesis
import pytest
from hypothesis import strategies as st

from mailintake.contracts.records import Decision, MailClassified, SenderIdentity, TicketOptions
from mailintake.outbound_mail import ticket_number_of_message_id
from services.ticketer.auto_answer_templates import (
    InvalidTemplate,
    TemplateText,
    check_template,
    parse_template_file,
    render_template,
)
from services.ticketer.auto_answers import (
    AutoAnswer,
    NoAutoAnswer,
    TicketFacts,
    body_text,
    dedupe_key,
    header_text,
    mail_address,
    message_id_reference,
    parsed_mail_address,
    plan_auto_answer,
)
from services.ticketer.settings import TicketerSettings

TOKEN = "6f1c0e7a9b2d4c35a1e8f0d2c4b6a890"
TEMPLATE = TemplateText(
    "default",
    "We received your request: {{ subject }}",
    "Hello {{ requester_name or requester }},\n\nyour request is {{ reference }} at {{ account_name }}.\n",
)
SETTINGS = TicketerSettings(auto_answers_enabled=True, auto_answer_max_per_recipient=3)
TICKET = TicketFacts(number=10042, reference="[#mi-10042]", subject="Printer jammed", requester="max@example.com")


def decision(**changes) -> MailClassified:
    fields = dict(
        account_id="support",
        source_id="INBOX:1:7",
        message_id="<abc.123@customer.example>",
        poll_cycle=1,
        fetched_at=datetime(2026, 11, 29, tzinfo=UTC),
        decision=Decision.NEW_TICKET,
        rules_fired=("new-ticket",),
        sender="max@example.com",
        sender_name="Max Mustermann",
        subject="Printer jammed",
        body_text="Paper jam.",
        raw_sha256="0" * 64,
        sender_identity=SenderIdentity(name="Support Desk", address="support@helpdesk.example"),
        ticket_options=TicketOptions(auto_answer_template="default"),
    )
    return MailClassified(**{**fields, **changes})


def plan(mail: MailClassified | None = None, template: TemplateText | None = TEMPLATE, settings=SETTINGS, answers=0, ticket=TICKET):
    return plan_auto_answer(mail or decision(), ticket, template, settings, answers, message_id_token=TOKEN)


def test_a_new_ticket_gets_its_answer_with_reference_threading_and_our_message_id():
    answer = plan()
    assert isinstance(answer, AutoAnswer)
    assert answer.subject == "[#mi-10042] We received your request: Printer jammed"
    assert answer.body_text == "Hello Max Mustermann,\n\nyour request is [#mi-10042] at Support Desk.\n"
    assert (answer.sender_name, answer.sender_address, answer.recipient) == (
        "Support Desk", "support@helpdesk.example", "max@example.com",
    )
    assert answer.in_reply_to == "<abc.123@customer.example>"
    assert answer.message_id == f"<mi-10042.{TOKEN}@helpdesk.example>"
    # The classifier's reader (the one definition of the format) finds the ticket in it.
    assert ticket_number_of_message_id(answer.message_id, "mi") == 10042
    assert answer.dedupe_key == "support:INBOX:1:7:auto_answer"
    assert answer.kind == "auto_answer" and answer.ticket_number == 10042


def test_a_template_that_already_carries_the_reference_is_left_alone():
    template = TemplateText("t", "Re: {{ subject }} {{ reference }}", "ok")
    assert plan(template=template).subject == "Re: Printer jammed [#mi-10042]"


@pytest.mark.parametrize(
    ("mail", "settings", "template", "answers", "reason"),
    [
        (decision(), TicketerSettings(), TEMPLATE, 0, "auto-answers are switched off"),
        (decision(ticket_options=TicketOptions()), SETTINGS, TEMPLATE, 0, "names no auto-answer template"),
        (decision(loop=True), SETTINGS, TEMPLATE, 0, "marked the mail loop"),
        (decision(bulk=True), SETTINGS, TEMPLATE, 0, "marked the mail bulk"),
        (decision(bounce=True), SETTINGS, TEMPLATE, 0, "marked the mail bounce"),
        (decision(auto_submitted=True), SETTINGS, TEMPLATE, 0, "marked the mail auto_submitted"),
        (decision(suppress_auto_answer=True), SETTINGS, TEMPLATE, 0, "marked the mail suppress_auto_answer"),
        (decision(), SETTINGS, None, 0, "no auto-answer template named 'default'"),
        (decision(sender_identity=SenderIdentity(name="x")), SETTINGS, TEMPLATE, 0, "has no valid sender address"),
        (decision(sender="Support@Helpdesk.example"), SETTINGS, TEMPLATE, 0, "the account's own sender address"),
        (decision(), SETTINGS, TEMPLATE, 3, "already got 3 auto-answers"),
    ],
)
def test_no_answer_and_the_reason(mail, settings, template, answers, reason):
    result = plan(mail, template, settings, answers)
    assert isinstance(result, NoAutoAnswer)
    assert reason in result.reason


def test_the_cap_allows_answers_up_to_its_limit():
    assert isinstance(plan(answers=2), AutoAnswer)
    assert isinstance(plan(answers=3), NoAutoAnswer)


@pytest.mark.parametrize("subject", ["{{ subject.__class__ }}", "{{ number + subject }}", "{{ subject | int // 0 }}"])
def test_a_template_failing_at_render_time_skips_the_answer_and_says_why(subject):
    result = plan(template=TemplateText("broken", subject, "x"))
    assert isinstance(result, NoAutoAnswer) and "template 'broken' failed" in result.reason


@pytest.mark.parametrize(
    "hostile",
    [
        "Printer\r\nBcc: victim@example.com",
        "Printer\nBcc: victim@example.com",
        "Printer\rBcc: victim@example.com",
        "Printer\x00\x1b[31m\x85Bcc: victim@example.com",
        "Printer\u2028Bcc: victim@example.com",
    ],
)
def test_hostile_subjects_and_names_end_up_on_one_header_line(hostile):
    mail = decision(subject=hostile, sender_identity=SenderIdentity(name=hostile, address="support@helpdesk.example"))
    answer = plan(mail, ticket=TicketFacts(10042, "[#mi-10042]", hostile, "max@example.com"))
    for value in (answer.subject, answer.sender_name):
        assert not any(char in value for char in "\r\n\x00\x1b\x85\u2028")
        assert "Bcc: victim@example.com" in value  # kept as harmless text, not as a header


@pytest.mark.parametrize(
    "hostile",
    [
        "victim@example.com\r\nBcc: other@example.com",
        "victim@example.com, other@example.com",
        "Victim <victim@example.com>",
        "victim@example.com>\r\nX: y",
        "no-at-sign",
        "@example.com",
        "a" * 250 + "@example.com",
        "0@[",  # the stdlib's parser raised AttributeError on it, which failed the whole batch
    ],
)
def test_a_sender_that_is_not_one_bare_address_gets_no_answer(hostile):
    assert mail_address(hostile) is None
    result = plan(decision(sender=hostile))
    assert isinstance(result, NoAutoAnswer) and "not a single mail address" in result.reason


@pytest.mark.parametrize(
    "address",
    [
        "max.mustermann@example.com", "o'brien+tag@ex-ample.co.uk", "a@-c.d", "x@localhost", "a..b@c.d", ".a@c.d",
        "a.@c.d", "a@c..d", "a@c.d.", '"quoted local"@example.com', '"a"@example.com', "a@[192.0.2.1]",
        "müller@example.com", "a@münchen.de", "a@c.d\n", "a b@c.d", "a@c.d ", "(comment)a@c.d", "a@@c.d",
    ],
)
def test_the_plain_address_shortcut_agrees_with_the_stdlib_parser(address):
    assert mail_address(address) == parsed_mail_address(address)


@hypothesis.given(st.text(alphabet="ab.@-+_'\"()[] \t\r\nüä0\x00\u2028", max_size=30))
@hypothesis.settings(max_examples=600, deadline=None)
def test_the_plain_address_shortcut_agrees_with_the_stdlib_parser_on_any_text(text):
    assert mail_address(text) == (parsed_mail_address(text) if text else None)


def test_customer_text_is_inserted_as_text_never_run_as_template_code():
    mail = decision(subject="{{ 7 * 7 }} {% raw %}", sender_name="{{ requester }}")
    ticket = TicketFacts(10042, "[#mi-10042]", "{{ 7 * 7 }} {% raw %}", "max@example.com")
    answer = plan(mail, ticket=ticket)
    assert "{{ 7 * 7 }} {% raw %}" in answer.subject and "49" not in answer.subject
    assert answer.body_text.startswith("Hello {{ requester }},")


def test_header_and_body_cleaning():
    assert header_text("  a\r\n\tb  \x00 c ") == "a b c"
    assert body_text("one\r\ntwo\rthree\x00\x07\tfour") == "one\ntwo\nthree\tfour"
    assert message_id_reference("abc@x") == "<abc@x>"
    assert message_id_reference("<abc@x>\r\nBcc: y") is None
    assert message_id_reference(None) is None


def test_dedupe_key_fits_the_column_whatever_the_source_id():
    long_key = dedupe_key("support", "x" * 1000, "auto_answer")
    assert len(long_key) <= 400 and long_key.startswith("support:sha256=")
    assert long_key != dedupe_key("support", "x" * 999, "auto_answer")


@pytest.mark.parametrize(
    ("subject", "body", "problem"),
    [
        ("{{ subject ", "x", "subject, line 1"),
        ("ok", "{% if %}", "body, line 1"),
        ("{{ ticket_owner }}", "x", "unknown variable(s) ticket_owner"),
        ("ok", "{% if false %}{{ secret }}{% endif %}", "unknown variable(s) secret"),
        ("{{ subject.__class__.__mro__ }}", "x", "fails with sample values"),
        ("ok", "{{ number + 'x' }}", "fails with sample values"),
    ],
)
def test_template_errors_are_reported_when_checked(subject, body, problem):
    with pytest.raises(InvalidTemplate, match="template 'bad'") as error:
        check_template(TemplateText("bad", subject, body))
    assert problem in str(error.value)


def test_a_good_template_renders_every_variable():
    template = TemplateText(
        "all",
        "{{ reference }} {{ subject }}",
        "{{ number }} {{ requester }} {{ requester_name }} {{ account_id }} {{ account_name }} "
        "{{ sender_address }} {{ category }} {{ priority }} {{ resource }}",
    )
    check_template(template)
    rendered = render_template(template, {"reference": "[#mi-1]", "subject": "s", "number": 1, "requester": "r",
                                          "requester_name": "n", "account_id": "a", "account_name": "an",
                                          "sender_address": "sa", "category": "c", "priority": "p", "resource": "rs"})
    assert (rendered.subject, rendered.body) == ("[#mi-1] s", "1 r n a an sa c p rs")


def test_template_file_imports_all_or_nothing():
    good = "templates:\n  - name: a\n    subject: 'Hi {{ subject }}'\n    body: 'Body'\n"
    assert parse_template_file(good) == [TemplateText("a", "Hi {{ subject }}", "Body")]
    with pytest.raises(InvalidTemplate, match="template 'b', body, line 1"):
        parse_template_file(good + "  - name: b\n    subject: ok\n    body: '{% for %}'\n")
    with pytest.raises(InvalidTemplate, match="appears twice"):
        parse_template_file(good + "  - name: a\n    subject: ok\n    body: ok\n")
    with pytest.raises(InvalidTemplate, match="exactly the keys"):
        parse_template_file("templates:\n  - name: a\n    subject: ok\n")
    with pytest.raises(InvalidTemplate, match="'templates:' list"):
        parse_template_file("name: a\n")
    with pytest.raises(InvalidTemplate, match="template name"):
        parse_template_file("templates:\n  - name: 'a b'\n    subject: ok\n    body: ok\n")
