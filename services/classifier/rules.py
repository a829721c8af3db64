"""The new-ticket / follow-up / reject decision, as a declarative table of named rules.

In the manner of Mailman's chains: each rule is a small named unit with a description
and a ``check``. :data:`DECISION_TABLE` is walked in order and every rule that matches
is recorded in ``rules_fired``:

* marking rules (``marks``) come first and only mark the mail: automatic, bulk, loop,
  bounce. Every mark suppresses auto-answers, which is what breaks mail loops;
* deciding rules (``decision``) follow; the first that matches decides.

So the decision lists every mark that applied and the one rule that decided.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from mailintake.contracts.records import Decision, TicketOptions
from mailintake.outbound_mail import INSTANCE_HEADER, format_ticket_reference, ticket_number_of_message_id
from services.classifier.headers import first_token
from services.classifier.parsing import ParsedMail
from services.classifier.settings import LoopBulkDecision


class Mark(StrEnum):
    AUTO_SUBMITTED = "auto_submitted"
    BULK = "bulk"
    LOOP = "loop"
    BOUNCE = "bounce"
    SUPPRESS_AUTO_ANSWER = "suppress_auto_answer"


@dataclass(frozen=True)
class RuleContext:
    """What the rules may look at besides the mail: the account's options and our installation."""

    options: TicketOptions
    instance_id: str
    reference_pattern: re.Pattern[str]
    loop_bulk_decision: LoopBulkDecision = LoopBulkDecision.NEW_TICKET
    message_id_domains: frozenset[str] = frozenset()


@dataclass
class Verdict:
    """Accumulates what the rules found while the table is walked."""

    rules_fired: list[str] = field(default_factory=list)
    marks: set[Mark] = field(default_factory=set)
    ticket_reference: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[ParsedMail, RuleContext, Verdict], bool]
    decision: Decision | None = None
    reason: str | None = None
    marks: frozenset[Mark] = frozenset()


def _first(mail: ParsedMail, header: str) -> str | None:
    values = mail.headers.get(header)
    return values[0] if values else None


def find_reference(subject: str, context: RuleContext) -> str | None:
    """The first reference in ``subject`` that carries our instance id, as written.

    A reference with a foreign instance id was written by another help-desk
    installation and counts as no reference.
    """
    for match in context.reference_pattern.finditer(subject):
        if match.group("instance") == context.instance_id:
            return match.group(0)
    return None


def referenced_ticket(mail: ParsedMail, context: RuleContext) -> int | None:
    """The ticket named by one of our Message-IDs in In-Reply-To or References, newest first.

    In-Reply-To names the mail answered; References lists the thread oldest first, so it
    is read from the end.
    """
    candidates = ([mail.in_reply_to] if mail.in_reply_to else []) + list(reversed(mail.references))
    for message_id in candidates:
        number = ticket_number_of_message_id(message_id, context.instance_id, context.message_id_domains)
        if number is not None:
            return number
    return None


def _auto_submitted(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    value = first_token(_first(mail, "auto-submitted"))
    return bool(value) and value != "no"


def _precedence_bulk(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    return first_token(_first(mail, "precedence")) in ("bulk", "junk", "list")


def _precedence_auto_reply(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    return first_token(_first(mail, "precedence")) == "auto_reply"


def _mailing_list(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    return "list-id" in mail.headers


def _auto_response_suppressed(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    # Exchange's values: All, DR, NDR, RN, NRN, OOF, AutoReply. Only those that stop
    # automatic replies matter to us; receipts (DR/NDR/RN/NRN) are not answers.
    value = (_first(mail, "x-auto-response-suppress") or "").lower()
    words = {w.strip() for w in value.replace(",", " ").split()}
    return bool(words & {"all", "oof", "autoreply"})


def _x_loop(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    return "x-loop" in mail.headers


def _empty_return_path(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    value = _first(mail, "return-path")
    return value is not None and value.strip().replace(" ", "") in ("<>", "")


_DAEMON_LOCAL_PARTS = ("mailer-daemon", "postmaster")


def _daemon_sender(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    return mail.sender.rsplit("@", 1)[0] in _DAEMON_LOCAL_PARTS


def _delivery_report(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    return mail.delivery_report is not None


def _read_receipt(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    return mail.disposition_report


def _other_installation(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    value = _first(mail, INSTANCE_HEADER.lower())
    return value is not None and value.strip() != context.instance_id


def _own_outbound(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    value = _first(mail, INSTANCE_HEADER.lower())
    return value is not None and value.strip() == context.instance_id


def _has_reference(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    verdict.ticket_reference = find_reference(mail.subject, context)
    return verdict.ticket_reference is not None


def _replies_to_our_mail(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    number = referenced_ticket(mail, context)
    if number is None:
        return False
    verdict.ticket_reference = format_ticket_reference(context.instance_id, number)
    return True


def _marked_and_rejected(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    return context.loop_bulk_decision is LoopBulkDecision.REJECT and bool(verdict.marks - {Mark.SUPPRESS_AUTO_ANSWER})


_AUTOMATIC = frozenset({Mark.AUTO_SUBMITTED, Mark.SUPPRESS_AUTO_ANSWER})
_BULK = frozenset({Mark.BULK, Mark.SUPPRESS_AUTO_ANSWER})
_LOOP = frozenset({Mark.LOOP, Mark.SUPPRESS_AUTO_ANSWER})

DECISION_TABLE: tuple[Rule, ...] = (
    Rule(
        name="auto-submitted",
        description="Auto-Submitted is present and not 'no' (RFC 3834): an auto-reply or an automatic notification.",
        check=_auto_submitted,
        marks=_AUTOMATIC,
    ),
    Rule(
        name="precedence-auto-reply",
        description="Precedence: auto_reply, the pre-RFC 3834 mark of vacation replies.",
        check=_precedence_auto_reply,
        marks=_AUTOMATIC,
    ),
    Rule(
        name="precedence-bulk",
        description="Precedence is bulk, junk or list: newsletters, mailing lists, mass mail.",
        check=_precedence_bulk,
        marks=_BULK,
    ),
    Rule(
        name="mailing-list",
        description=(
            "List-Id is present (RFC 2919): the mail came through a mailing list. A help-desk "
            "address fed through a list (a Google Group, say) gets every mail marked bulk."
        ),
        check=_mailing_list,
        marks=_BULK,
    ),
    Rule(
        name="auto-response-suppressed",
        description="X-Auto-Response-Suppress asks for no automatic replies (All, OOF or AutoReply; Exchange).",
        check=_auto_response_suppressed,
        marks=frozenset({Mark.SUPPRESS_AUTO_ANSWER}),
    ),
    Rule(
        name="x-loop",
        description="X-Loop is present: some system already handled this mail automatically.",
        check=_x_loop,
        marks=_LOOP,
    ),
    Rule(
        name="empty-return-path",
        description="Return-Path is <>, the null sender of bounces and auto-replies, which must never be answered (RFC 5321 4.5.5).",
        check=_empty_return_path,
        marks=_LOOP,
    ),
    Rule(
        name="mailer-daemon-sender",
        description="The sender is mailer-daemon or postmaster: a mail server speaking, not a person.",
        check=_daemon_sender,
        marks=_LOOP,
    ),
    Rule(
        name="delivery-status-report",
        description="A bounce (RFC 3464 DSN, multipart/report; report-type=delivery-status); the decision carries the original Message-ID.",
        check=_delivery_report,
        marks=frozenset({Mark.BOUNCE, Mark.SUPPRESS_AUTO_ANSWER}),
    ),
    Rule(
        name="read-receipt",
        description="A read receipt (RFC 8098, multipart/report; report-type=disposition-notification).",
        check=_read_receipt,
        marks=_AUTOMATIC,
    ),
    Rule(
        name="other-installation-mail",
        description="X-Mailintake-Instance names another mailintake installation: help desks answering each other.",
        check=_other_installation,
        marks=_LOOP,
    ),
    Rule(
        name="own-outbound-mail",
        description=(
            "X-Mailintake-Instance names this installation: our own mail came back. Rejected whatever "
            "loop_bulk_decision says, since a copy of what we sent adds nothing and could start a loop."
        ),
        check=_own_outbound,
        decision=Decision.REJECT,
        reason="the mail is this installation's own outbound mail (X-Mailintake-Instance)",
        marks=_LOOP,
    ),
    Rule(
        name="ticket-reference-in-subject",
        description="The subject carries a reference to one of our tickets: the mail is a follow-up.",
        check=_has_reference,
        decision=Decision.FOLLOW_UP,
    ),
    Rule(
        name="reply-to-our-message-id",
        description="In-Reply-To or References names a Message-ID we sent about a ticket: the mail is a follow-up to it.",
        check=_replies_to_our_mail,
        decision=Decision.FOLLOW_UP,
    ),
    Rule(
        name="no-new-tickets",
        description="The account is set to 'emails do not create new tickets' and the mail is no follow-up.",
        check=lambda mail, context, verdict: context.options.no_new_tickets,
        decision=Decision.REJECT,
        reason="the account accepts follow-ups only (emails do not create new tickets) and the mail has no ticket reference",
    ),
    Rule(
        name="loop-or-bulk-rejected",
        description="The mail is marked automatic, bulk, loop or bounce, and loop_bulk_decision is 'reject'.",
        check=_marked_and_rejected,
        decision=Decision.REJECT,
        reason="the mail is automatic, bulk, a loop or a bounce, and such mails open no tickets (loop_bulk_decision=reject)",
    ),
    Rule(
        name="new-ticket",
        description="No earlier rule decided: the mail is a candidate for a new ticket.",
        check=lambda mail, context, verdict: True,
        decision=Decision.NEW_TICKET,
    ),
)


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    rules_fired: tuple[str, ...]
    reason: str | None
    ticket_reference: str | None
    marks: frozenset[Mark] = frozenset()


def decide(mail: ParsedMail, context: RuleContext, table: tuple[Rule, ...] = DECISION_TABLE) -> Outcome:
    """Walk ``table`` and return the first decision, with every rule that fired up to it."""
    verdict = Verdict()
    for rule in table:
        if not rule.check(mail, context, verdict):
            continue
        verdict.rules_fired.append(rule.name)
        verdict.marks |= rule.marks
        if rule.decision is not None:
            return Outcome(
                rule.decision, tuple(verdict.rules_fired), rule.reason, verdict.ticket_reference, frozenset(verdict.marks)
            )
    raise AssertionError("the decision table must end with a rule that always decides")
