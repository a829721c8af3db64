"""Settings of the admin service (the HTTP API and the accounts web page)."""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationInfo, field_validator
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

    forwarded_allow_ips: str = "127.0.0.1"
    """Comma-separated addresses of the reverse proxies (e.g. the ingress) whose X-Forwarded-Proto and X-Forwarded-For are trusted, or *. Behind a proxy that ends TLS this makes the page's session cookie Secure."""

    public_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+(/[^?#]*)?$")
    """The admin page's address as browsers reach it, e.g. https://mailintake-admin.example.com. "Connect with Microsoft" sends the identity provider PUBLIC_URL/accounts/oauth/callback as the redirect URI, which must be registered with the application there; it is never taken from a request's Host header. Unset, the page cannot connect oauth2_refresh_token accounts."""

    api_token: SecretStr | None = None
    """An admin token given by the deployment (the chart's adminToken secret), registered hashed at start as the token named 'deployment', so a platform team has a first token without the CLI: 'mi_' and at least 32 random characters after it, e.g. python -c "import secrets; print('mi_' + secrets.token_urlsafe(32))". A changed secret replaces the old token; one revoked with `mailintake admin token revoke deployment` stays revoked. Secret."""

    @field_validator("api_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            token = value.get_secret_value()
            if not token.startswith("mi_") or len(token) < 35:
                raise ValueError("an admin token starts with 'mi_' and has at least 32 characters after it")
        return value

    kafka_bootstrap_servers: str | None = None
    """Kafka bootstrap servers (host:port, comma-separated). When set, each account change is announced on the accounts topic, so the fetcher replica owning the account reads it at once; unset, changes apply at the fetchers' next refresh (MAILINTAKE_FETCHER_ACCOUNTS_REFRESH_SECONDS)."""

    check_timeout_seconds: float = Field(default=15.0, gt=0, le=120)
    """Timeout of each step of a connection check started from the API or the page."""

    check_source_address: str | None = None
    """Local address connection checks connect from, on hosts with several (as `accounts check --source-address`); by default the system picks."""

    oidc_issuer: str | None = None
    """Issuer (the iss claim) of OIDC access tokens to accept as bearer tokens, besides admin tokens. Set together with MAILINTAKE_ADMIN_OIDC_AUDIENCE and MAILINTAKE_ADMIN_OIDC_JWKS_URL; unset, only admin tokens are accepted."""

    oidc_audience: str | None = None
    """Audience (the aud claim) an OIDC access token must name: the client id or API identifier registered for mailintake."""

    oidc_jwks_url: str | None = Field(default=None, validate_default=True)
    """URL of the identity provider's signing keys (JWKS), e.g. https://login.example.com/.well-known/jwks.json; use https."""

    oidc_actor_claim: str = "sub"
    """Claim of an OIDC token that names the caller in the audit log (as oidc:<value>), e.g. sub or preferred_username."""

    @field_validator("oidc_jwks_url")
    @classmethod
    def _oidc_all_or_nothing(cls, value: str | None, info: ValidationInfo) -> str | None:
        # On the last of the three, so the error names a variable; it runs even when unset (validate_default).
        given = [value, info.data.get("oidc_issuer"), info.data.get("oidc_audience")]
        if any(given) and not all(given):
            raise ValueError(
                "MAILINTAKE_ADMIN_OIDC_ISSUER, MAILINTAKE_ADMIN_OIDC_AUDIENCE and MAILINTAKE_ADMIN_OIDC_JWKS_URL "
                "go together: set all three or none"
            )
        return value

    @property
    def oidc_configured(self) -> bool:
        return self.oidc_issuer is not None
