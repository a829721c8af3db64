"""The mail account: one validated model holding every option of the "Add account" dialog."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from mailintake.contracts.records import SenderIdentity, TicketOptions


class AccountProtocol(StrEnum):
    IMAP = "imap"
    POP3 = "pop3"
    EWS = "ews"
    GRAPH = "graph"


class Authentication(StrEnum):
    """How the fetcher proves who it is to the mail server."""

    PASSWORD = "password"
    KERBEROS = "kerberos"
    """EWS only: a Kerberos ticket acquired with the account's password (Negotiate)."""
    OAUTH2_CLIENT_CREDENTIALS = "oauth2_client_credentials"
    """App-only: the application's own token (tenant, client id, and a secret or certificate)."""
    OAUTH2_REFRESH_TOKEN = "oauth2_refresh_token"
    """Delegated: a refresh token obtained once through the admin consent flow."""


OAUTH2_METHODS = frozenset({Authentication.OAUTH2_CLIENT_CREDENTIALS, Authentication.OAUTH2_REFRESH_TOKEN})


class OAuth2Provider(StrEnum):
    MICROSOFT = "microsoft"
    """Microsoft Entra ID through msal; the authority is built from the tenant unless given."""
    OIDC = "oidc"
    """Any other OpenID Connect provider (Google, Keycloak, ...), found by its issuer's discovery document."""


class OAuth2(BaseModel):
    """Where and as which application an OAuth2 account gets its access tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    provider: OAuth2Provider = OAuth2Provider.MICROSOFT
    """microsoft (msal) or oidc (a standard OpenID Connect provider)."""

    tenant: str | None = None
    """Microsoft tenant id or primary domain; required for microsoft unless authority is given."""

    authority: str | None = Field(default=None, pattern=r"^https://")
    """Issuer URL. For microsoft it defaults to https://login.microsoftonline.com/<tenant>; required for oidc."""

    client_id: str = Field(min_length=1)
    """The application (client) id registered with the provider."""

    client_secret: SecretStr | None = None
    """Client secret. Never logged, never produced to a topic, never in repr."""

    certificate_file: Path | None = None
    """PEM file with the application's certificate and private key, instead of a client secret."""

    refresh_token: SecretStr | None = None
    """oauth2_refresh_token: the refresh token the consent flow obtained. Rotated tokens replace it."""

    scopes: tuple[str, ...] = ()
    """Scopes to request; empty means the protocol's default (IMAP/POP3/SMTP or Graph scopes of the provider)."""

    ca_file: Path | None = None
    """CA file to trust for the provider's HTTPS endpoints instead of the system's."""

    @model_validator(mode="after")
    def _where_from(self) -> OAuth2:
        if self.provider is OAuth2Provider.MICROSOFT and not (self.tenant or self.authority):
            raise ValueError("microsoft needs a tenant (or an authority)")
        if self.provider is OAuth2Provider.OIDC and not self.authority:
            raise ValueError("oidc needs an authority (the issuer URL)")
        if self.client_secret is not None and self.certificate_file is not None:
            raise ValueError("give either client_secret or certificate_file, not both")
        return self

    @property
    def issuer(self) -> str:
        """The authority tokens come from."""
        return self.authority or f"https://login.microsoftonline.com/{self.tenant}"


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
    """imap, pop3, ews or graph (Microsoft Graph REST)."""

    host: str = Field(min_length=1)
    """Mail server host name or address."""

    port: int = Field(ge=1, le=65535)
    """Mail server port."""

    security: Security = Security.TLS
    """tls (implicit TLS), starttls, or none."""

    ca_file: Path | None = None
    """CA file or bundle to trust instead of the system's; the certificate is always verified."""

    username: str = Field(min_length=1)
    """Login name. IMAP and POP3 pass the Exchange shared-mailbox form Domain\\User\\Alias through intact; EWS logs in as Domain\\User and opens the mailbox Alias with delegate access. With OAuth2 and for graph it is the mailbox's address (a shared mailbox's own address, used with the delegate's token)."""

    authentication: Authentication = Authentication.PASSWORD
    """password, kerberos (EWS), oauth2_client_credentials or oauth2_refresh_token."""

    password: SecretStr | None = None
    """Password (password and kerberos). Never logged, never produced to a topic, never in repr."""

    oauth2: OAuth2 | None = None
    """Token source for the oauth2_* methods."""

    folder: str = "INBOX"
    """Folder to fetch from (IMAP, EWS and Graph)."""

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

    @model_validator(mode="before")
    @classmethod
    def _kerberos_was_implied(cls, data: object) -> object:
        # Before the method was explicit, an EWS account that refused NTLM logged in with Kerberos.
        if isinstance(data, dict) and "authentication" not in data:
            protocol, prevent_ntlm = data.get("protocol"), data.get("prevent_ntlm", True)
            if str(protocol) == AccountProtocol.EWS.value and prevent_ntlm:
                return {**data, "authentication": Authentication.KERBEROS.value}
        return data

    secrets_required: ClassVar[bool] = True
    """False for views and drafts that leave secrets out (the stored ones are kept)."""

    @model_validator(mode="after")
    def _credentials_fit_the_method(self) -> Account:
        method, oauth2 = self.authentication, self.oauth2
        if method in OAUTH2_METHODS:
            if oauth2 is None:
                raise ValueError(f"authentication {method.value} needs an oauth2 section")
            if self.password is not None:
                raise ValueError(f"authentication {method.value} takes no password")
            # "is None", not falsiness: an export's empty placeholder SecretStr("") is falsy, yet stands for a stored secret.
            if self.secrets_required and method is Authentication.OAUTH2_CLIENT_CREDENTIALS and (
                oauth2.client_secret is None and oauth2.certificate_file is None
            ):
                raise ValueError("oauth2_client_credentials needs oauth2.client_secret or oauth2.certificate_file")
            if self.secrets_required and method is Authentication.OAUTH2_REFRESH_TOKEN and oauth2.refresh_token is None:
                raise ValueError("oauth2_refresh_token needs oauth2.refresh_token (run the consent flow)")
        else:
            if self.secrets_required and self.password is None:
                raise ValueError(f"authentication {method.value} needs a password")
            if oauth2 is not None:
                raise ValueError(f"authentication {method.value} takes no oauth2 section")
        if method is Authentication.KERBEROS and self.protocol is not AccountProtocol.EWS:
            raise ValueError("kerberos is for ews accounts only")
        if self.protocol is AccountProtocol.GRAPH and method not in OAUTH2_METHODS:
            raise ValueError("graph accounts authenticate with oauth2_client_credentials or oauth2_refresh_token")
        return self

    def secret_password(self) -> str:
        """The password, for methods that have one; a clear error for the others."""
        if self.password is None:
            raise ValueError(f"account {self.id!r} authenticates with {self.authentication.value}, not a password")
        return self.password.get_secret_value()

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
        if info.data.get("protocol") in (AccountProtocol.EWS, AccountProtocol.GRAPH) and value is not Security.TLS:
            name = "EWS" if info.data["protocol"] is AccountProtocol.EWS else "Graph"
            raise ValueError(f"{name} runs over HTTPS only; use tls")
        return value


class InvalidAccountFile(Exception):
    """The accounts file cannot be read; the message names the file, the account and the field."""
