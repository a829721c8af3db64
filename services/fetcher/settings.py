"""Settings of the fetcher service."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mailintake.runtime.settings import ServiceSettings


class FetcherSettings(ServiceSettings):
    """The fetcher polls mailboxes and produces each mail to ``mail.raw``."""

    model_config = SettingsConfigDict(env_prefix="MAILINTAKE_FETCHER_", frozen=True, use_attribute_docstrings=True)

    accounts_file: Path = Path("accounts.yaml")
    """YAML file with the accounts to poll (an 'accounts:' list)."""

    inline_limit_bytes: int = Field(default=1024 * 1024, ge=1024, le=1536 * 1024)
    """Mails larger than this go through the claim-check store instead of inline on Kafka (at most 1.5 MiB, which the topics' max.message.bytes allows)."""

    fetch_chunk: int = Field(default=100, ge=1, le=5000)
    """Mails fetched and produced per round trip; the high-water mark moves after each chunk."""

    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """Socket timeout for every mail-server operation."""
