"""Whether a new ticket gets an auto-answer, and the outbox row if it does. Pure.

:func:`plan_auto_answer` takes everything it looks at as arguments (the decision, the
created ticket, the account's template, how many auto-answers the recipient got in
the window) and returns either the values of the ``outbound_mails`` row or the reason
there is none. ``auto_answer_outbox.queue_auto_answer`` gathers those arguments and
writes the row in the ticket's transaction.

Header safety lives here too: everything that ends up in a header goes through
:func:`header_text` or :func:`mail_address`, so no subject, name or address can carry
a CR, LF or other control character into the mail (the sender's ``EmailMessage``
refuses CR/LF as a second line of defence).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import asdict, dataclass
from email.headerregistry import Address

from mailintake.address_syntax import DOT_ATOM
from mailintake.contracts.records import MailClassified
from mailintake.outbound_mail import format_outbound_message_id
from services.ticketer.auto_answer_templates import TemplateText, render_template
from services.ticketer.settings import TicketerSettings

AUTO_ANSWER_KIND = "auto_answer"

_MESSAGE_ID_FALLBACK_DOMAIN = "mailintake.invalid"

_DEDUPE_KEY_LENGTH = 400  # outbound_mails.dedupe_key is String(400)
_SENDER_NAME_LENGTH = 255  # outbound_mails.sender_name; a longer value would fail the ticket's transaction
_ADDRESS_LENGTH = 254  # RFC 5321's limit on a path, inside outbound_mails' String(320)
_MSG_ID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x7e]{1,900}>$")  # printable ASCII, no '<' '>' inside
_BREAKS_A_LINE = {"Cc", "Zl", "Zp"}  # controls (CR, LF, NUL, ESC, NEL, ...) and Unicode line/paragraph separators
_PLAIN_ADDRESS = re.compile(rf"{DOT_ATOM}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\Z")


@dataclass(frozen=True)
class TicketFacts:
    """What an auto-answer may say about the ticket it answers."""

    number: int
    reference: str
    subject: str
    requester: str
    category: str | None = None
    priority: str | None = None
    resource: str | None = None


@dataclass(frozen=True)
class AutoAnswer:
    """The values of one ``outbound_mails`` row (the columns without defaults)."""

    dedupe_key: str
    kind: str
    ticket_number: int
    account_id: str
    sender_name: str | None
    sender_address: str
    recipient: str
    subject: str
    message_id: str
    in_reply_to: str | None
    body_text: str

    def row(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class NoAutoAnswer:
    """No auto-answer for this ticket, and why (for the log)."""

    reason: str


def header_text(value: str | None) -> str:
    """``value`` as one header line: every control or line-separator character becomes a
    space, runs of whitespace shrink to one, and the ends are trimmed."""
    spaced = "".join(" " if unicodedata.category(char) in _BREAKS_A_LINE else char for char in value or "")
    return " ".join(spaced.split())


def body_text(value: str) -> str:
    """``value`` as a text/plain body: line ends become LF, tabs stay, other controls go."""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    return "".join(
        char for char in lines if char in "\n\t" or unicodedata.category(char) != "Cc"
    )


def mail_address(value: str | None) -> str | None:
    """``value`` if it is one bare addr-spec (``local@domain``) and nothing else, else None."""
    if not value or len(value) > _ADDRESS_LENGTH:
        return None
    if _PLAIN_ADDRESS.match(value):
        # The stdlib's parser costs ~90 us an address, two per answer; an address of
        # dot-atoms alone is one it accepts as is (the tests compare the two).
        return value
    return parsed_mail_address(value)


def parsed_mail_address(value: str) -> str | None:
    """:func:`mail_address` by the stdlib's addr-spec parser alone, its length limit aside:
    the reference its shortcut is tested against."""
    if any(char.isspace() or unicodedata.category(char) in _BREAKS_A_LINE for char in value):
        return None
    try:
        address = Address(addr_spec=value)
    except Exception:  # noqa: BLE001 - besides its own errors, the parser raises AttributeError on '0@['
        return None
    if address.addr_spec != value or not address.username or not address.domain:
        return None
    return value


def message_id_reference(value: str | None) -> str | None:
    """The customer's Message-ID in angle brackets, fit for In-Reply-To; None if it does not look like one."""
    if not value:
        return None
    value = value.strip()
    if not value.startswith("<"):
        value = f"<{value}>"
    return value if _MSG_ID.match(value) else None


def dedupe_key(account_id: str, source_id: str, kind: str) -> str:
    """One key per mail and kind of outbound mail, so a replayed mail never queues twice.

    Source ids are free text of any length; one too long for the column is replaced by
    its SHA-256, which is just as unique.
    """
    key = f"{account_id}:{source_id}:{kind}"
    if len(key) <= _DEDUPE_KEY_LENGTH:
        return key
    return f"{account_id}:sha256={hashlib.sha256(source_id.encode()).hexdigest()}:{kind}"


def why_not_answer(decision: MailClassified, settings: TicketerSettings) -> str | None:
    """The reason ``decision`` gets no auto-answer that needs no database, or None."""
    if not settings.auto_answers_enabled:
        return "auto-answers are switched off (auto_answers_enabled)"
    if not decision.ticket_options.auto_answer_template:
        return f"account {decision.account_id} names no auto-answer template"
    # The classifier sets suppress_auto_answer with each of the others; reading them all
    # keeps the answer off even if a producer sets only the specific flag.
    marks = {
        "suppress_auto_answer": decision.suppress_auto_answer,
        "auto_submitted": decision.auto_submitted,
        "loop": decision.loop,
        "bulk": decision.bulk,
        "bounce": decision.bounce,
    }
    marked = [name for name, value in marks.items() if value]
    if marked:
        return f"the classifier marked the mail {', '.join(marked)}"
    return None


def template_variables(decision: MailClassified, ticket: TicketFacts, sender_address: str) -> dict[str, object]:
    """The values a template sees: strings and the ticket number, nothing with attributes."""
    return {
        "number": ticket.number,
        "reference": ticket.reference,
        "subject": ticket.subject,
        "requester": ticket.requester,
        "requester_name": decision.sender_name or "",
        "account_id": decision.account_id,
        "account_name": decision.sender_identity.name or decision.account_id,
        "sender_address": sender_address,
        "category": ticket.category or "",
        "priority": ticket.priority or "",
        "resource": ticket.resource or "",
    }


def plan_auto_answer(
    decision: MailClassified,
    ticket: TicketFacts,
    template: TemplateText | None,
    settings: TicketerSettings,
    answers_in_window: int,
    message_id_token: str | None = None,
) -> AutoAnswer | NoAutoAnswer:
    """The auto-answer to the mail that opened ``ticket``, or why there is none.

    ``template`` is the one the account names (None if no such template exists);
    ``answers_in_window`` is how many auto-answers went to the mail's sender within
    ``settings.auto_answer_window_seconds``. ``message_id_token`` is the random part of
    the Message-ID (format: ``mailintake.outbound_mail``); tests pass one to get a known id.
    """
    reason = why_not_answer(decision, settings)
    if reason:
        return NoAutoAnswer(reason)
    template_name = decision.ticket_options.auto_answer_template
    if template is None:
        return NoAutoAnswer(f"no auto-answer template named {template_name!r} (see `mailintake templates import`)")
    sender_address = mail_address(decision.sender_identity.address)
    if sender_address is None:
        return NoAutoAnswer(f"account {decision.account_id} has no valid sender address")
    recipient = mail_address(decision.sender)
    if recipient is None:
        return NoAutoAnswer(f"the sender {decision.sender!r} is not a single mail address")
    recipient = recipient.lower()
    if recipient == sender_address.lower():
        return NoAutoAnswer("the mail came from the account's own sender address")
    if answers_in_window >= settings.auto_answer_max_per_recipient:
        return NoAutoAnswer(
            f"{recipient} already got {answers_in_window} auto-answers within "
            f"{settings.auto_answer_window_seconds}s (auto_answer_max_per_recipient)"
        )
    try:
        rendered = render_template(template, template_variables(decision, ticket, sender_address))
    except Exception as error:  # noqa: BLE001 - a template must never fail the ticket's transaction
        return NoAutoAnswer(f"template {template.name!r} failed: {type(error).__name__}: {error}")
    subject = header_text(rendered.subject)
    if ticket.reference not in subject:
        # Replies must carry the reference back, whatever the template says.
        subject = f"{ticket.reference} {subject}".rstrip()
    try:
        message_id = format_outbound_message_id(
            settings.instance_id, ticket.number, sender_address.rpartition("@")[2], message_id_token
        )
    except ValueError:  # e.g. an internationalised domain, which a Message-ID cannot hold as is
        message_id = format_outbound_message_id(
            settings.instance_id, ticket.number, _MESSAGE_ID_FALLBACK_DOMAIN, message_id_token
        )
    return AutoAnswer(
        dedupe_key=dedupe_key(decision.account_id, decision.source_id, AUTO_ANSWER_KIND),
        kind=AUTO_ANSWER_KIND,
        ticket_number=ticket.number,
        account_id=decision.account_id,
        sender_name=header_text(decision.sender_identity.name)[:_SENDER_NAME_LENGTH] or None,
        sender_address=sender_address,
        recipient=recipient,
        subject=subject,
        message_id=message_id,
        in_reply_to=message_id_reference(decision.message_id),
        body_text=body_text(rendered.body),
    )
