"""Settings of the local development stack (ports, state directory, heap)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Every server of the stack binds to this address and no other.
HOST = "127.0.0.1"

#: Mail domain of the demo mailboxes; the SMTP relay delivers only to it.
MAIL_DOMAIN = "mailintake.test"

#: The variable handing the SMTP relay its introspection secret (not its command line, which `ps` shows).
INTROSPECTION_SECRET_VARIABLE = "MAILINTAKE_STACK_RELAY_INTROSPECTION_SECRET"


def repo_root(start: Path | None = None) -> Path:
    """Return the git work tree containing ``start`` (default: cwd), or ``start`` itself.

    Looks for a ``.git`` entry (directory, or file for worktrees) instead of
    running git, so it works where git is not installed.
    """
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return here


class StackSettings(BaseSettings):
    """Where the local stack keeps its state and which loopback ports it uses."""

    model_config = SettingsConfigDict(
        env_prefix="MAILINTAKE_STACK_",
        frozen=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    state_dir: Path = Path(".stack")
    """State directory (data, logs, pid files, TLS files); relative paths are taken
    from the repository root (the current directory's git top, else the current directory)."""

    kafka_port: int = Field(19092, ge=1024, le=65535)
    """Kafka client listener (PLAINTEXT) on 127.0.0.1."""

    kafka_controller_port: int = Field(19093, ge=1024, le=65535)
    """Kafka KRaft controller listener on 127.0.0.1."""

    postgres_port: int = Field(15432, ge=1024, le=65535)
    """PostgreSQL TCP port on 127.0.0.1."""

    imap_port: int = Field(10143, ge=1024, le=65535)
    """Dovecot IMAP port (STARTTLS)."""

    imaps_port: int = Field(10993, ge=1024, le=65535)
    """Dovecot IMAP port with implicit TLS."""

    pop3_port: int = Field(10110, ge=1024, le=65535)
    """Dovecot POP3 port (STLS)."""

    pop3s_port: int = Field(10995, ge=1024, le=65535)
    """Dovecot POP3 port with implicit TLS."""

    smtp_port: int = Field(10025, ge=1024, le=65535)
    """SMTP relay port (STARTTLS, then AUTH); delivers into the Dovecot mailboxes."""

    oidc_port: int = Field(10444, ge=1024, le=65535)
    """OpenID Connect provider (HTTPS, the stack's certificate); its issuer is
    https://127.0.0.1:PORT."""

    oidc_access_token_ttl: int = Field(300, ge=1, le=86400)
    """Seconds an access token of the stack's OpenID Connect provider lives (its
    `mailintake-short-lived` client gets a few seconds regardless, for expiry tests)."""

    oidc_refresh_token_ttl: int = Field(14 * 86400, ge=60)
    """Seconds a refresh token of the stack's OpenID Connect provider lives."""

    kafka_heap: str = Field("512m", pattern=r"^[0-9]+[kmgKMG]?$")
    """Maximum Java heap of the Kafka broker (the value of -Xmx)."""

    startup_timeout: float = Field(120.0, gt=0)
    """Seconds `up` waits for each server to answer its readiness check."""

    postgres_bin_dir: Path | None = None
    """Directory holding initdb and postgres; by default found on PATH or in
    Debian's /usr/lib/postgresql/<version>/bin (newest version)."""

    mail_system_user: str = "mailintake-vmail"
    """OS user owning the Maildirs when the stack runs as root (created if missing);
    as a non-root user the mail belongs to that user."""

    @field_validator("state_dir")
    @classmethod
    def _anchor_state_dir(cls, value: Path) -> Path:
        # Anchor once, so that every process (CLI, tests, SMTP relay) that
        # reads these settings agrees on one absolute directory.
        value = value.expanduser()
        if not value.is_absolute():
            value = repo_root() / value
        return Path(os.path.normpath(value))

    @model_validator(mode="after")
    def _ports_distinct(self) -> StackSettings:
        seen: dict[int, str] = {}
        for name, port in self.ports().items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both set to port {port}")
            seen[port] = name
        return self

    def ports(self) -> dict[str, int]:
        """All configured ports by field name."""
        return {name: getattr(self, name) for name in type(self).model_fields if name.endswith("_port")}
