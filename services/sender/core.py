"""The sender's pure core: an outbox row as a mail, and what a failed attempt leads to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from mailintake.outbound_mail import INSTANCE_HEADER
from services.ticketer.auto_answers import AUTO_ANSWER_KIND


@dataclass(frozen=True)
class ClaimedMail:
    """One outbox row this sender holds the lease on; ``attempts`` counts this one."""

    id: int
    attempts: int
    kind: str
    sender_name: str | None
    sender_address: str
    recipient: str
    subject: str
    message_id: str
    in_reply_to: str | None
    body_text: str
    account_id: str | None = None
    """The mail account the mail answers for; an OAuth2 account sends as itself (XOAUTH2)."""

    @property
    def international(self) -> bool:
        """Whether an address needs SMTPUTF8 (a non-ASCII local part or domain)."""
        return not (self.sender_address + self.recipient).isascii()


class NotAMail(ValueError):
    """An outbox row that cannot become a mail (a header with CR/LF, a broken address);
    retrying cannot help."""


def outbound_message(mail: ClaimedMail, now: datetime, instance_id: str) -> EmailMessage:
    """The RFC 5322 message of ``mail``, dated ``now``, sent by installation ``instance_id``.

    Auto-answers carry ``Auto-Submitted: auto-replied`` (RFC 3834), so well-behaved
    autoresponders do not answer them, and ``X-Auto-Response-Suppress: All``, which
    Exchange honours. ``In-Reply-To``/``References`` thread the answer under the
    customer's mail. ``X-Mailintake-Instance`` lets the classifier see our own mail
    coming back as a loop (``mailintake.outbound_mail``). ``EmailMessage`` and ``Address`` refuse CR/LF in any header, so a
    row that got past the ticketer's cleaning still cannot inject a header.
    """
    message = EmailMessage(policy=policy.SMTPUTF8 if mail.international else policy.SMTP)
    try:
        message["From"] = Address(display_name=mail.sender_name or "", addr_spec=mail.sender_address)
        message["To"] = Address(addr_spec=mail.recipient)
        message["Subject"] = mail.subject
        message["Date"] = format_datetime(now)
        message["Message-ID"] = mail.message_id
        message[INSTANCE_HEADER] = instance_id
        if mail.in_reply_to:
            message["In-Reply-To"] = mail.in_reply_to
            message["References"] = mail.in_reply_to
        if mail.kind == AUTO_ANSWER_KIND:
            message["Auto-Submitted"] = "auto-replied"
            message["X-Auto-Response-Suppress"] = "All"
        message.set_content(mail.body_text)
    except (ValueError, TypeError, IndexError) as error:
        raise NotAMail(f"outbox row {mail.id} cannot be a mail: {error}") from None
    return message


@dataclass(frozen=True)
class Delivered:
    reply: str
    """The server's final reply to DATA, exactly as sent (code and text)."""


@dataclass(frozen=True)
class NotDelivered:
    reply: str
    """The server's reply that refused the mail, or what failed when there was none."""
    permanent: bool
    """True when trying again cannot help (a refused recipient or message, a row that is no mail)."""


@dataclass(frozen=True)
class RetryLater:
    delay_seconds: float


@dataclass(frozen=True)
class GiveUp:
    reason: str


def after_failure(
    attempts: int, permanent: bool, max_attempts: int, base_seconds: float, max_seconds: float
) -> RetryLater | GiveUp:
    """What follows failed attempt number ``attempts``: a retry after an exponentially
    growing delay (base, 2 x base, 4 x base, ... at most ``max_seconds``), or giving up."""
    if permanent:
        return GiveUp("refused for good")
    if attempts >= max_attempts:
        return GiveUp(f"still failing after {attempts} attempts")
    return RetryLater(min(base_seconds * 2 ** (attempts - 1), max_seconds))
