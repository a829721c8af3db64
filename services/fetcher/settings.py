"""Settings of the fetcher service."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from mailintake.runtime.settings import ServiceSettings


class MailboxOwnershipMode(StrEnum):
    CONSUMER_GROUP = "consumer_group"
    ALL = "all"


class FetcherSettings(ServiceSettings):
    """The fetcher polls mailboxes and produces each mail to ``mail.raw``."""

    model_config = SettingsConfigDict(env_prefix="MAILINTAKE_FETCHER_", frozen=True, use_attribute_docstrings=True)

    accounts_refresh_seconds: float = Field(default=30.0, ge=1, le=3600)
    """How often the stored accounts are read again, so added, changed or disabled accounts apply without a restart."""

    inline_limit_bytes: int = Field(default=1024 * 1024, ge=1024, le=1536 * 1024)
    """Mails larger than this go through the claim-check store instead of inline on Kafka (at most 1.5 MiB, which the topics' max.message.bytes allows)."""

    fetch_chunk_bytes: int = Field(default=4 * 1024 * 1024, ge=1, le=256 * 1024 * 1024)
    """Octets fetched and produced per round trip where the server tells the sizes beforehand (IMAP); a larger mail goes alone. The mark moves after each chunk; a poll holds up to about three chunks at once."""

    fetch_chunk: int = Field(default=100, ge=1, le=5000)
    """Mails fetched and produced per round trip where the server does not tell their sizes beforehand (POP3, EWS); the mark moves after each chunk."""

    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """Timeout of every mail-server operation (connect, TLS, each read and write) and of every wait for Kafka."""

    token_refresh_margin_seconds: float = Field(default=300.0, ge=0, le=3600)
    """OAuth2 accounts: get a new access token when the cached one has less than this left
    (at most half its lifetime), so a poll never starts with a token about to expire."""

    poll_workers: int = Field(default=8, ge=1, le=256)
    """Accounts polled at the same time; a slow or failing account holds up only its own worker."""

    mailbox_ownership: MailboxOwnershipMode = MailboxOwnershipMode.CONSUMER_GROUP
    """'consumer_group': the replicas share the mailboxes through one Kafka consumer group on the accounts topic, so add replicas to scale out. 'all': this process polls every enabled account; run exactly one."""

    group_id: str = "mailintake-fetcher"
    """Kafka consumer group of the fetcher replicas (with mailbox_ownership 'consumer_group')."""

    session_timeout_seconds: float = Field(default=10.0, ge=6, le=300)
    """How long the mailboxes of a replica that died without leaving the group wait before the others poll them."""


class AccountEncryptionSettings(BaseSettings):
    """Key(s) that encrypt the passwords of stored accounts; every service that reads the ``accounts`` table uses the same."""

    # A prefix of its own, not the fetcher's: the admin service reads the same variables.
    model_config = SettingsConfigDict(
        env_prefix="MAILINTAKE_ACCOUNTS_", frozen=True, use_attribute_docstrings=True, extra="ignore"
    )

    encryption_keys: SecretStr | None = None
    """Comma-separated Fernet keys (`mailintake accounts generate-key`). The first encrypts, every one decrypts: to rotate, put a new key first, run `mailintake accounts reencrypt`, then drop the old key. Secret."""

    encryption_key_file: Path | None = None
    """File holding the Fernet key(s), comma- or newline-separated, e.g. a mounted Kubernetes secret. Used when MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS is not set."""
