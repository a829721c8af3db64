"""Settings of the admin service (the HTTP API and the accounts web page)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdminSettings(BaseSettings):
    """The admin service serves the accounts page (``/accounts``), the API (``/api``) and its OpenAPI document (``/docs``, ``/openapi.json``)."""

    model_config = SettingsConfigDict(
        env_prefix="MAILINTAKE_ADMIN_", frozen=True, use_attribute_docstrings=True, extra="ignore"
    )

    host: str = "127.0.0.1"
    """Address the API binds to. Loopback by default; every route but /livez, /readyz, /login and the OpenAPI document needs a token (`mailintake admin token create NAME`)."""

    port: int = Field(default=8080, ge=1, le=65535)
    """Port the API listens on."""

    database_url: SecretStr = SecretStr("postgresql+psycopg://mailintake:mailintake@127.0.0.1:15432/mailintake")
    """SQLAlchemy URL of the PostgreSQL database (driver postgresql+psycopg). Secret: it may hold a password."""

    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    """Lowest level logged: DEBUG, INFO, WARNING or ERROR."""

    check_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    """Timeout of each step of a connection check started from the API or the page."""

    check_source_address: str | None = None
    """Local address connection checks connect from, on hosts with several (as `accounts check --source-address`); by default the system picks."""
