"""The mail account: one validated model holding every option of the "Add account" dialog."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

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
    """Login name; the Exchange shared-mailbox form Domain\\User\\Alias is passed through intact."""

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
    """EWS never negotiates NTLM."""

    sender: SenderIdentity = SenderIdentity()
    """Sender name and address for auto-answers."""

    ticket_options: TicketOptions = TicketOptions()
    """Ticket-creation options carried on each record."""

    enabled: bool = True
    """Disabled accounts are not polled."""

    @field_validator("after_fetch")
    @classmethod
    def _after_fetch_action(cls, value: str) -> str:
        if not _AFTER_FETCH.match(value):
            raise ValueError("must be delete, mark_seen or move:<folder>")
        return value


class InvalidAccountFile(Exception):
    """The accounts file cannot be read; the message names the file, the account and the field."""


def load_accounts(path: Path) -> list[Account]:
    """Read ``accounts:`` from a YAML file; relative ``ca_file`` paths are taken from the file's folder."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidAccountFile(f"{path}: {exc}") from None
    entries = document.get("accounts") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidAccountFile(f"{path}: expected a top-level 'accounts:' list")
    accounts = []
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("ca_file"):
            entry = {**entry, "ca_file": str(path.parent / entry["ca_file"])}
        try:
            accounts.append(Account.model_validate(entry))
        except ValidationError as exc:
            label = entry.get("id", f"#{index}") if isinstance(entry, dict) else f"#{index}"
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise InvalidAccountFile(f"{path}: account {label}: {problems}") from None
    ids = [a.id for a in accounts]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidAccountFile(f"{path}: duplicate account ids {duplicates}")
    return accounts
