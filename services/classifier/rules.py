"""The new-ticket / follow-up / reject decision, as a declarative table of named rules.

In the manner of Mailman's chains: each rule is a small named unit with a description
and a ``check``. :data:`DECISION_TABLE` is walked in order; every rule that matches is
recorded in ``rules_fired``, and the first matching rule with a decision decides.
Rules without a decision only mark the mail (e.g. loop protection, in a later step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from mailintake.contracts.records import Decision, TicketOptions
from services.classifier.parsing import ParsedMail


@dataclass(frozen=True)
class RuleContext:
    """What the rules may look at besides the mail: the account's options and our instance."""

    options: TicketOptions
    instance_id: str
    reference_pattern: re.Pattern[str]


@dataclass
class Verdict:
    """Accumulates what the rules found while the table is walked."""

    rules_fired: list[str] = field(default_factory=list)
    ticket_reference: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Callable[[ParsedMail, RuleContext, Verdict], bool]
    decision: Decision | None = None
    reason: str | None = None


def find_reference(subject: str, context: RuleContext) -> str | None:
    """The first reference in ``subject`` that carries our instance id, as written.

    A reference with a foreign instance id was written by another help-desk
    installation and counts as no reference.
    """
    for match in context.reference_pattern.finditer(subject):
        if match.group("instance") == context.instance_id:
            return match.group(0)
    return None


def _has_reference(mail: ParsedMail, context: RuleContext, verdict: Verdict) -> bool:
    verdict.ticket_reference = find_reference(mail.subject, context)
    return verdict.ticket_reference is not None


DECISION_TABLE: tuple[Rule, ...] = (
    Rule(
        name="ticket-reference-in-subject",
        description="The subject carries a reference to one of our tickets: the mail is a follow-up.",
        check=_has_reference,
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


def decide(mail: ParsedMail, context: RuleContext, table: tuple[Rule, ...] = DECISION_TABLE) -> Outcome:
    """Walk ``table`` and return the first decision, with every rule that fired up to it."""
    verdict = Verdict()
    for rule in table:
        if not rule.check(mail, context, verdict):
            continue
        verdict.rules_fired.append(rule.name)
        if rule.decision is not None:
            return Outcome(rule.decision, tuple(verdict.rules_fired), rule.reason, verdict.ticket_reference)
    raise AssertionError("the decision table must end with a rule that always decides")
