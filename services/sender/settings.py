"""Settings of the sender service."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from mailintake.runtime.settings import ProcessSettings


class SmtpSecurity(StrEnum):
    TLS = "tls"
    STARTTLS = "starttls"
    NONE = "none"


class SenderSettings(ProcessSettings):
    """The sender delivers the outbox (``outbound_mails``) over SMTP."""

    model_config = SettingsConfigDict(env_prefix="MAILINTAKE_SENDER_", frozen=True, use_attribute_docstrings=True)

    instance_id: str = Field(default="mi", pattern=r"^[a-z0-9]{1,16}$")
    """Id of this help-desk installation, sent as X-Mailintake-Instance so our own mail coming back is seen as a loop (must match the ticketer's and classifier's)."""

    smtp_host: str = "127.0.0.1"
    """SMTP submission server host name or address; its certificate must name it."""

    smtp_port: int = Field(default=587, ge=1, le=65535)
    """SMTP submission server port (587 for starttls, 465 for tls)."""

    smtp_security: SmtpSecurity = SmtpSecurity.STARTTLS
    """tls (implicit TLS), starttls (required, not opportunistic), or none (a relay on the same host; no AUTH then)."""

    smtp_ca_file: Path | None = None
    """CA file or bundle to trust instead of the system's; the certificate is always verified."""

    smtp_username: SecretStr | None = None
    """Login for SMTP AUTH; unset means no AUTH."""

    smtp_password: SecretStr | None = None
    """Password for SMTP AUTH. Never logged."""

    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    """Socket timeout for every SMTP command."""

    poll_interval_seconds: float = Field(default=2.0, gt=0)
    """How long the loop sleeps when no outbound mail is due."""

    lease_seconds: float = Field(default=300.0, gt=0)
    """A claimed mail is left to its sender for this long; after that another replica may send it again. Must exceed the longest SMTP conversation."""

    max_attempts: int = Field(default=8, ge=1)
    """Attempts before a mail is given up ('failed'); a refused recipient or message fails at once."""

    retry_base_seconds: float = Field(default=30.0, gt=0)
    """Delay after the first failed attempt; it doubles with each further one."""

    retry_max_seconds: float = Field(default=3600.0, gt=0)
    """Longest delay between two attempts."""

    @field_validator("smtp_password")
    @classmethod
    def _password_with_username(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (value is None) != (info.data.get("smtp_username") is None):
            raise ValueError("set both smtp_username and smtp_password, or neither")
        if value is not None and info.data.get("smtp_security") is SmtpSecurity.NONE:
            raise ValueError("smtp_security 'none' would send the password in clear; use starttls or tls")
        return value

    @field_validator("lease_seconds")
    @classmethod
    def _lease_outlasts_a_conversation(cls, value: float, info: ValidationInfo) -> float:
        # One conversation is several commands, each allowed the full timeout.
        timeout = info.data.get("smtp_timeout_seconds")
        if timeout is not None and value <= 4 * timeout:
            raise ValueError("must exceed 4 x smtp_timeout_seconds, or a slow send is sent twice")
        return value
