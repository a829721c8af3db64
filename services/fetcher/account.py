"""The mail account: one validated model holding every option of the "Add account" dialog."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from mailintake.contracts.records import SenderIdentity, TicketOptions


class AccountProtocol(StrEnum):
    IMAP = "imap"
    POP3 = "pop3"
    EWS = "ews"


class Security(StrEnum):
    TLS = "tls"
    STARTTLS = "starttls"
    NONE = "none"


_AFTER_FETCH = re.compile(r"^(delete|mark_seen|move:.+)$")


class Account(BaseModel):
    """One mailbox to poll, with what to do with its mails."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")
    """Stable id of the account; records and the ledger refer to it. Lower-case letters, digits, '.', '_', '-'."""

    name: str = Field(min_length=1, max_length=200)
    """Display name."""

    protocol: AccountProtocol = AccountProtocol.IMAP
    """imap, pop3 or ews."""

    host: str = Field(min_length=1)
    """Mail server host name or address."""

    port: int = Field(ge=1, le=65535)
    """Mail server port."""

    security: Security = Security.TLS
    """tls (implicit TLS), starttls, or none."""

    ca_file: Path | None = None
    """CA file or bundle to trust instead of the system's; the certificate is always verified."""

    username: str = Field(min_length=1)
    """Login name. IMAP and POP3 pass the Exchange shared-mailbox form Domain\\User\\Alias through intact; EWS logs in as Domain\\User and opens the mailbox Alias with delegate access."""

    password: SecretStr
    """Password. Never logged, never produced to a topic, never in repr."""

    folder: str = "INBOX"
    """Folder to fetch from (IMAP and EWS)."""

    poll_interval_seconds: int = Field(default=60, ge=5, le=86400)
    """Seconds between two polls of this mailbox."""

    after_fetch: str = "mark_seen"
    """What happens to a mail on the server once Kafka acknowledged it: delete, mark_seen or move:<folder>."""

    prevent_plaintext_login: bool = True
    """Never send the password with IMAP LOGIN or POP3 USER/PASS; use SASL PLAIN (UTF-8) only."""

    prevent_ntlm: bool = True
    """EWS never negotiates NTLM: only Kerberos (Negotiate) is used, with the process's ticket; off, NTLM and then Basic over TLS are allowed too."""

    sender: SenderIdentity = SenderIdentity()
    """Sender name and address for auto-answers."""

    ticket_options: TicketOptions = TicketOptions()
    """Ticket-creation options carried on each record."""

    enabled: bool = True
    """Disabled accounts are not polled."""

    @field_validator("after_fetch")
    @classmethod
    def _after_fetch_action(cls, value: str, info: ValidationInfo) -> str:
        if not _AFTER_FETCH.match(value):
            raise ValueError("must be delete, mark_seen or move:<folder>")
        # POP3 has a single mailbox and no folders, so there is nothing to move a mail to.
        if info.data.get("protocol") is AccountProtocol.POP3 and value.startswith("move:"):
            raise ValueError("POP3 has no folders to move to; use delete or mark_seen")
        return value

    @field_validator("security")
    @classmethod
    def _ews_needs_tls(cls, value: Security, info: ValidationInfo) -> Security:
        # EWS is SOAP over HTTPS: no STARTTLS, and no plain HTTP that would expose the password.
        if info.data.get("protocol") is AccountProtocol.EWS and value is not Security.TLS:
            raise ValueError("EWS runs over HTTPS only; use tls")
        return value


class InvalidAccountFile(Exception):
    """The accounts file cannot be read; the message names the file, the account and the field."""
