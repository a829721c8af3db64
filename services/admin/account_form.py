"""The "Add account" / "Edit account" form: its groups and fields, in the order of the
dialog, each with the short help a user needs. Pure data; ``templates/account_form.html``
renders it, and :func:`~services.admin.account_editing.form_document` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.fetcher.account import OAUTH2_METHODS as ACCOUNT_OAUTH2_METHODS


class Kind(StrEnum):
    TEXT = "text"
    NUMBER = "number"
    PASSWORD = "password"
    EMAIL = "email"
    SELECT = "select"
    CHECKBOX = "checkbox"
    CHOICE = "choice"
    """Free text with suggestions the browser filters as one types (a datalist)."""


@dataclass(frozen=True)
class FormField:
    name: str
    """Dotted, as the API document nests it: ``sender.address``."""
    label: str
    kind: Kind
    help: str
    options: tuple[str, ...] = ()
    """For SELECT: the fixed choices."""
    choices: str | None = None
    """For SELECT and CHOICE filled from the database: resources, categories, priorities, users or templates."""
    required: bool = False
    shown_for: str | None = None
    """The page's script shows the field only for these authentication methods (``oauth2``: both
    OAuth2 methods, ``password``: password and kerberos); without the script every field shows."""

    @property
    def element_id(self) -> str:
        return "field-" + self.name.replace(".", "-").replace("_", "-")


@dataclass(frozen=True)
class FormGroup:
    title: str
    fields: tuple[FormField, ...]


SHARED_MAILBOX_HELP = (
    "Your login name. For an Exchange shared mailbox write Domain\\User\\SharedMailboxAlias, "
    "for example EXAMPLE\\max.mustermann\\helpdesk: you log in as Domain\\User and read the mailbox "
    "SharedMailboxAlias. IMAP and POP3 pass the name to the server exactly as written."
)

GROUPS: tuple[FormGroup, ...] = (
    FormGroup(
        "Server and login information",
        (
            FormField("id", "Account id", Kind.TEXT, "Stable id that tickets refer to: lower-case letters, digits, '.', '_', '-'. "
                      "It cannot change later.", required=True),
            FormField("name", "Display name", Kind.TEXT, "How the account is shown in lists.", required=True),
            FormField("protocol", "Protocol", Kind.SELECT, "IMAP, POP3, Exchange Web Services (EWS), or Microsoft "
                      "Graph (Microsoft 365; signs in with OAuth2).", options=("imap", "pop3", "ews", "graph")),
            FormField("host", "Server", Kind.TEXT, "Host name or address of the mail server.", required=True),
            FormField("port", "Port", Kind.NUMBER, "IMAP 993 (TLS) or 143 (STARTTLS); POP3 995 or 110; EWS and Graph 443.",
                      required=True),
            FormField("security", "Security", Kind.SELECT, "tls: encrypted from the start; starttls: encrypted after "
                      "the greeting; none: unencrypted (avoid). The certificate is always verified.",
                      options=("tls", "starttls", "none")),
            FormField("ca_file", "CA file", Kind.TEXT, "Optional path on the server to a CA bundle to trust instead of "
                      "the system's, for a private certificate authority."),
            FormField("username", "User name", Kind.TEXT, SHARED_MAILBOX_HELP, required=True),
            FormField("authentication", "Authentication", Kind.SELECT, "password; kerberos (EWS only); "
                      "oauth2_client_credentials (an application's own token: tenant, client id and a secret or "
                      "certificate); oauth2_refresh_token (a user's delegated token: fill in the OAuth2 fields, then "
                      "\"Connect with Microsoft\").",
                      options=("password", "kerberos", "oauth2_client_credentials", "oauth2_refresh_token")),
            FormField("password", "Password", Kind.PASSWORD, "Never shown again once saved. When editing, leave empty "
                      "to keep the stored password, unless the server, port, security or CA file changes.",
                      shown_for="password"),
            FormField("prevent_plaintext_login", "Prevent text-only login", Kind.CHECKBOX, "Never send the password "
                      "with IMAP LOGIN or POP3 USER/PASS; use SASL PLAIN only. Needed for passwords with non-ASCII "
                      "characters."),
            FormField("prevent_ntlm", "Prevent NTLM login", Kind.CHECKBOX, "EWS only: log in with Kerberos, never "
                      "NTLM."),
            FormField("folder", "Folder", Kind.TEXT, "Folder to fetch from (IMAP, EWS and Graph); usually INBOX."),
            FormField("poll_interval_seconds", "Polling interval (seconds)", Kind.NUMBER, "Seconds between two "
                      "fetches, 5 to 86400."),
            FormField("after_fetch", "After fetch", Kind.TEXT, "What happens to a fetched mail on the server: "
                      "mark_seen, delete, or move:<folder> (not POP3)."),
            FormField("enabled", "Enabled", Kind.CHECKBOX, "Disabled accounts are not fetched."),
        ),
    ),
    FormGroup(
        "OAuth2",
        (
            FormField("oauth2.provider", "Identity provider", Kind.SELECT, "microsoft: Microsoft Entra ID (Microsoft "
                      "365), through msal; oidc: any other OpenID Connect provider (Google, Keycloak, ...).",
                      options=("microsoft", "oidc"), shown_for="oauth2"),
            FormField("oauth2.tenant", "Tenant", Kind.TEXT, "Microsoft: the tenant id or primary domain, for example "
                      "contoso.onmicrosoft.com. Not needed when an authority is given.", shown_for="oauth2"),
            FormField("oauth2.authority", "Authority", Kind.TEXT, "Issuer URL (https://). Microsoft: leave empty for "
                      "https://login.microsoftonline.com/<tenant>; oidc: required.", shown_for="oauth2"),
            FormField("oauth2.client_id", "Client id", Kind.TEXT, "The application (client) id registered with the "
                      "identity provider.", shown_for="oauth2"),
            FormField("oauth2.client_secret", "Client secret", Kind.PASSWORD, "Never shown again once saved. When "
                      "editing, leave empty to keep the stored secret, unless the provider, tenant, authority, client "
                      "id or CA file changes. Leave empty when a certificate file is given.", shown_for="oauth2"),
            FormField("oauth2.certificate_file", "Certificate file", Kind.TEXT, "Instead of a client secret: path on "
                      "the server to a PEM file with the application's certificate and private key.",
                      shown_for="oauth2"),
            FormField("oauth2.scopes", "Scopes", Kind.TEXT, "Scopes to request, separated by spaces; empty takes the "
                      "protocol's usual scopes at the provider.", shown_for="oauth2"),
            FormField("oauth2.ca_file", "Identity provider CA bundle", Kind.TEXT, "Optional path on the server to a CA "
                      "bundle to trust for the identity provider's HTTPS endpoints instead of the system's.",
                      shown_for="oauth2"),
        ),
    ),
    FormGroup(
        "Sender information",
        (
            FormField("sender.name", "Sender name", Kind.TEXT, "Name shown as the sender of auto-answers."),
            FormField("sender.address", "Sender address", Kind.EMAIL, "Address auto-answers are sent from, "
                      "for example helpdesk@example.com."),
        ),
    ),
    FormGroup(
        "Ticket creation options",
        (
            FormField("ticket_options.no_new_tickets", "Emails do not create new tickets", Kind.CHECKBOX,
                      "Only replies to existing tickets are taken; other mails are rejected."),
            FormField("ticket_options.create_user_from_local_part", "Create user from the local part", Kind.CHECKBOX,
                      "An unknown sender becomes a new user named after the part before the @."),
            FormField("ticket_options.create_location_from_domain", "Use the domain for a new location/customer",
                      Kind.CHECKBOX, "An unknown sender's domain becomes a new location/customer."),
            FormField("ticket_options.fallback_user", "Ticket user if unknown", Kind.CHOICE, "User who owns tickets "
                      "from unknown senders when no user is created. Type to filter.", choices="users"),
            FormField("ticket_options.auto_bundle", "Auto-bundle", Kind.CHECKBOX, "Mails of one sender with the same "
                      "subject in one fetch become one ticket."),
            FormField("ticket_options.auto_answer_template", "Auto-answer template", Kind.CHOICE, "Template answered "
                      "to new tickets; empty sends no auto-answer.", choices="templates"),
        ),
    ),
    FormGroup(
        "New ticket for",
        (
            FormField("ticket_options.resource", "Resource", Kind.SELECT, "Who gets new tickets.", choices="resources"),
            FormField("ticket_options.category", "Category", Kind.SELECT, "Category of new tickets.",
                      choices="categories"),
            FormField("ticket_options.priority", "Priority", Kind.SELECT, "Priority of new tickets.",
                      choices="priorities"),
        ),
    ),
)

NEW_ACCOUNT = {"protocol": "imap", "port": "993", "security": "tls", "authentication": "password",
               "oauth2.provider": "microsoft", "folder": "INBOX", "poll_interval_seconds": "60",
               "after_fetch": "mark_seen", "prevent_plaintext_login": True, "prevent_ntlm": True, "enabled": True,
               "ticket_options.auto_bundle": True}
"""What the form shows for a new account: the model's defaults, with the usual IMAPS port."""


def flat_values(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested account document as the form's dotted field values (None becomes empty)."""
    values: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, Mapping):
            values.update(flat_values(value, f"{prefix}{key}."))
        elif isinstance(value, bool):
            values[f"{prefix}{key}"] = value
        elif isinstance(value, (list, tuple)):
            values[f"{prefix}{key}"] = " ".join(map(str, value))
        else:
            values[f"{prefix}{key}"] = "" if value is None else str(value)
    return values


NOT_ACCOUNT_FIELDS = frozenset({"csrf_token", "editing"})
"""Fields of the page's form that are not the account's: the CSRF token, and which account is edited."""

WRITE_ONLY = frozenset({"password", "oauth2.client_secret"})
"""Secrets: sent by the browser, never shown again (not even back after a refused post)."""


def submitted_values(fields: Mapping[str, str]) -> dict[str, Any]:
    """The form's values as a browser sent them, for showing the form again: checkboxes by presence, no password."""
    values: dict[str, Any] = {name: value for name, value in fields.items() if name not in WRITE_ONLY | NOT_ACCOUNT_FIELDS}
    for group in GROUPS:
        for field in group.fields:
            if field.kind is Kind.CHECKBOX:
                values[field.name] = field.name in fields
    return values


OAUTH2_METHODS = frozenset(method.value for method in ACCOUNT_OAUTH2_METHODS)


def prefilled_values(query: Mapping[str, str]) -> dict[str, Any]:
    """Form values given in a link (a failed consent sends the admin back with the account's
    settings): known fields only, never a secret, checkboxes as true/false."""
    values: dict[str, Any] = {}
    for group in GROUPS:
        for field in group.fields:
            if field.name in query and field.name not in WRITE_ONLY:
                text = query[field.name]
                values[field.name] = text.lower() in ("true", "on", "1") if field.kind is Kind.CHECKBOX else text
    return values


def form_document(fields: Mapping[str, str]) -> dict[str, Any]:
    """The form's fields as the nested document the API takes.

    Dotted names nest (``sender.address``); an empty optional field means "not set";
    a checkbox is true when sent; scopes are split at spaces. Fields the form does not
    have are kept, so the model names them. The OAuth2 fields count only for an OAuth2
    method: without the page's script they are sent for every method, and an untouched
    OAuth2 group must not fail a password account.
    """
    document: dict[str, Any] = {}
    keep_empty = {f.name for group in GROUPS for f in group.fields if f.required} | {"password"}
    oauth2 = fields.get("authentication", "password") in OAUTH2_METHODS
    for group in GROUPS:
        for field in group.fields:
            if field.kind is Kind.CHECKBOX:
                _put(document, field.name, field.name in fields)
    for name, value in fields.items():
        if name in NOT_ACCOUNT_FIELDS or _is_checkbox(name) or (name.startswith("oauth2.") and not oauth2):
            continue
        if name == "oauth2.scopes":
            _put(document, name, value.split())
            continue
        _put(document, name, None if value.strip() == "" and name not in keep_empty else value)
    return document


def _is_checkbox(name: str) -> bool:
    return any(f.name == name and f.kind is Kind.CHECKBOX for group in GROUPS for f in group.fields)


def _put(document: dict[str, Any], dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for parent in parents:
        document = document.setdefault(parent, {})
    document[leaf] = value
