"""Base of the per-service settings classes.

Each service has exactly one frozen pydantic-settings class (``FetcherSettings``,
``ClassifierSettings``, ``TicketerSettings``, ``SenderSettings``) deriving from
:class:`ProcessSettings` (the stream services through :class:`ServiceSettings`) with its
own environment prefix. Every field carries a docstring; the README's
configuration reference is generated from these classes (``mailintake config reference``).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class InvalidSettings(Exception):
    """A setting is missing or wrong; the message names the variable and the reason."""


class ProcessSettings(BaseSettings):
    """Fields every service process has, Kafka or not. Subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(frozen=True, use_attribute_docstrings=True, extra="ignore")

    database_url: SecretStr = SecretStr("postgresql+psycopg://mailintake:mailintake@127.0.0.1:15432/mailintake")
    """SQLAlchemy URL of the PostgreSQL database (driver postgresql+psycopg). Secret: it may hold a password."""

    http_host: str = "127.0.0.1"
    """Address the /metrics, /livez and /readyz endpoint binds to. Loopback by default; set 0.0.0.0 in a pod."""

    http_port: int = Field(default=0, ge=0, le=65535)
    """Port of the /metrics, /livez and /readyz endpoint; 0 picks a free port (logged at start)."""

    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    """Lowest level logged: DEBUG, INFO, WARNING or ERROR."""


class ServiceSettings(ProcessSettings):
    """Fields every Kafka stream service has. Subclasses set ``env_prefix``."""

    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    """Comma-separated Kafka bootstrap servers (host:port)."""


def env_name(settings_cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``settings_cls``."""
    return f"{settings_cls.model_config.get('env_prefix', '')}{field}".upper()


def load_settings(settings_cls: type[SettingsT], **overrides: object) -> SettingsT:
    """Build ``settings_cls`` from the environment, turning validation errors into one
    :class:`InvalidSettings` that names each bad variable and why."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            variable = env_name(settings_cls, field)
            # The input is deliberately not echoed: it may be a secret.
            lines.append(f"{variable} ({settings_cls.__name__}.{field}): {error['msg']}")
        raise InvalidSettings("invalid settings:\n  " + "\n  ".join(lines)) from None
