"""Editing stored accounts for the admin API and the web page: one path for both.

The pure part turns what a client sent (JSON, or the page's form fields read by
``account_form``) into an :class:`AccountDraft` or a list of :class:`FieldProblem`.
:class:`AccountEditor` is the edge: it checks reference data, keeps the stored password
when a draft leaves it empty, and writes through
:class:`~services.fetcher.account_store.AccountStore` with each change's audit entry in
the change's own transaction. Passwords go in, never out: no model here returns one,
and no problem message repeats what was typed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy import Connection, Engine, select

from mailintake.contracts.records import SenderIdentity
from services.admin.access import AuditLog
from services.admin.tickets_api import UtcDatetime
from services.fetcher.account import OAUTH2_METHODS, Account, Authentication, OAuth2
from services.fetcher.account_store import AccountChange, AccountStore, ChangeAction, ChangeHook
from services.fetcher.connection_check import CheckReport, check_account
from services.fetcher.oauth_tokens import TokenBroker
from services.fetcher.tables import AccountStatus
from services.ticketer.reference_data import missing_reference_data

# One '@', a local part without spaces or brackets, and a dotted domain: what a mail
# client can send to. Full RFC 5322 allows more, but no help desk's sender needs it.
_ADDRESS = re.compile(r"^[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\".]+(\.[^\s@<>()\[\],;:\".]+)+$")

class CheckedSender(SenderIdentity):
    """Sender information whose address, when given, is a mail address."""

    @field_validator("address")
    @classmethod
    def _a_mail_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _ADDRESS.match(value):
            raise ValueError("is not a mail address (expected local-part@domain.tld)")
        return value


def _empty_is_absent(value: object) -> object:
    if value == "" or (isinstance(value, SecretStr) and value.get_secret_value() == ""):
        return None
    return value


class OAuth2Draft(OAuth2):
    """The OAuth2 section as the API and the page take it: secrets may be empty (kept, see :func:`kept_secrets`)."""

    client_secret: SecretStr | None = None
    """Write-only. Empty or absent keeps the stored secret, for the same provider, tenant, authority, client id and CA file."""

    refresh_token: SecretStr | None = None
    """Write-only. Usually set by the consent flow ("Connect with Microsoft"); empty or absent keeps the stored one."""

    @field_validator("client_secret", "refresh_token", mode="before")
    @classmethod
    def _secret_empty_is_absent(cls, value: object) -> object:
        return _empty_is_absent(value)


class OAuth2Out(OAuth2):
    """The OAuth2 section as the API shows it: never a secret."""

    client_secret: SecretStr | None = Field(default=None, exclude=True)
    refresh_token: SecretStr | None = Field(default=None, exclude=True)


class AccountDraft(Account):
    """An account as the API and the page take it. The password may be empty: on an
    update (or a check of a stored account) that keeps the stored one."""

    secrets_required: ClassVar[bool] = False
    """Secrets left empty are kept from the stored account (see :func:`kept_password`)."""

    password: SecretStr | None = None
    """Write-only. Empty or absent keeps the stored password; required for a new account."""

    oauth2: OAuth2Draft | None = None
    """Token source for the oauth2_* methods; its secrets are write-only like the password."""

    sender: CheckedSender = CheckedSender()
    """Sender name and address for auto-answers; the address must be a mail address."""

    @field_validator("password", mode="before")
    @classmethod
    def _empty_is_absent(cls, value: object) -> object:
        return _empty_is_absent(value)

    def with_password(self, password: SecretStr) -> Account:
        return Account.model_validate({**self.model_dump(exclude={"password"}), "password": password})


class StoredAccountOut(Account):
    """A stored account as the API shows it: every setting, never the password."""

    password: SecretStr | None = Field(default=None, exclude=True)

    oauth2: OAuth2Out | None = None

    secrets_required: ClassVar[bool] = False
    """The view never holds secrets."""


class AccountStatusOut(BaseModel):
    """What the fetcher last saw of an account (``account_status``); times in UTC."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    last_poll_at: UtcDatetime | None
    last_success_at: UtcDatetime | None
    last_error_at: UtcDatetime | None
    last_error_step: str | None
    last_error: str | None = Field(description="The server's exact reply when it sent one.")
    consecutive_failures: int
    poll_lag_seconds: float | None = Field(description="How late the last poll started after it was due.")
    mails_fetched: int

    @property
    def label(self) -> str:
        if self.consecutive_failures:
            return f"failing ×{self.consecutive_failures} at {self.last_error_step or '?'}"
        return "ok" if self.last_success_at else "never polled"


class AccountView(BaseModel):
    account: StoredAccountOut
    status: AccountStatusOut | None = Field(description="None until the fetcher polled the account once.")


@dataclass(frozen=True)
class FieldProblem:
    """Why one field was refused. ``field`` is dotted (``ticket_options.resource``); empty for the whole account."""

    field: str
    message: str


class InvalidAccount(ValueError):
    def __init__(self, problems: Sequence[FieldProblem]) -> None:
        super().__init__("; ".join(f"{p.field or 'account'}: {p.message}" for p in problems))
        self.problems = tuple(problems)


class AccountNotFound(LookupError):
    pass


class AccountExists(ValueError):
    pass


def validation_problems(error: ValidationError) -> list[FieldProblem]:
    """The problems of a pydantic error, one per field. The input is never included: it may be a password."""
    return [
        FieldProblem(".".join(str(part) for part in item["loc"]), item["msg"])
        for item in error.errors(include_input=False, include_url=False)
    ]


def parse_draft(document: Mapping[str, Any]) -> AccountDraft:
    """The draft in ``document``, or :class:`InvalidAccount` naming each field and why."""
    try:
        return AccountDraft.model_validate(document)
    except ValidationError as error:
        raise InvalidAccount(validation_problems(error)) from None


def kept_password(draft: AccountDraft, stored: Account | None) -> SecretStr:
    """The draft's password, or the stored one when the draft leaves it empty.

    The stored password is kept only for the same server, security and CA: otherwise
    anyone with an admin token could point an account at a server of their own, or at
    plain text, and read the password off the wire. Write-only means that, too.
    """
    if draft.password is not None:
        return draft.password
    if stored is None:
        raise InvalidAccount([FieldProblem("password", "a new account needs a password")])
    if stored.password is None:
        raise InvalidAccount(
            [FieldProblem("password", f"enter a password: the stored account has none (it used {stored.authentication.value})")]
        )
    moved = [
        name for name in ("protocol", "host", "port", "security", "ca_file") if getattr(draft, name) != getattr(stored, name)
    ]
    if moved:
        raise InvalidAccount(
            [FieldProblem("password", f"enter the password again: {', '.join(moved)} changed, and the stored "
                          "password is only ever sent to the server it was entered for")]
        )
    return stored.password


_SECRET_DESTINATION = ("provider", "tenant", "authority", "client_id", "ca_file")
"""What decides where an OAuth2 secret is sent, and for which application."""


def kept_secrets(draft: AccountDraft, stored: Account | None, *, connecting: bool = False) -> Account:
    """The account of ``draft``, with the stored secrets it leaves empty.

    As for the password (:func:`kept_password`): a stored client secret or refresh
    token is kept only while the identity provider, tenant, authority, client id and
    CA file stay the same, so nobody can have it sent to a provider of their own.
    ``connecting``: for the consent flow, which is about to get the refresh token, so
    none is required (the result is an account without secrets checks, for the flow only).
    """
    if draft.authentication not in OAUTH2_METHODS:
        return draft.with_password(kept_password(draft, stored))
    oauth2 = draft.oauth2
    assert oauth2 is not None, "the model requires the oauth2 section for the oauth2 methods"
    before = stored.oauth2 if stored is not None else None
    moved = [] if before is None else [name for name in _SECRET_DESTINATION if getattr(oauth2, name) != getattr(before, name)]
    why_again = f"{', '.join(moved)} changed, and the stored {{}} is only ever sent to the identity provider and application it was {{}} for"
    problems = []

    client_secret = oauth2.client_secret
    if client_secret is None and oauth2.certificate_file is None and before is not None and before.client_secret is not None:
        if not moved:
            client_secret = before.client_secret
        elif draft.authentication is Authentication.OAUTH2_CLIENT_CREDENTIALS:
            problems.append(FieldProblem("oauth2.client_secret", "enter the client secret again: " + why_again.format("secret", "entered")))
    if (
        draft.authentication is Authentication.OAUTH2_CLIENT_CREDENTIALS
        and client_secret is None
        and oauth2.certificate_file is None
        and not problems
    ):
        problems.append(FieldProblem("oauth2.client_secret", "oauth2_client_credentials needs a client secret or a certificate file"))

    refresh_token = oauth2.refresh_token
    if draft.authentication is Authentication.OAUTH2_REFRESH_TOKEN and refresh_token is None and not connecting:
        if before is not None and before.refresh_token is not None and not moved:
            refresh_token = before.refresh_token
        elif before is not None and before.refresh_token is not None:
            problems.append(FieldProblem("oauth2.refresh_token", "connect again: " + why_again.format("refresh token", "issued")))
        else:
            problems.append(FieldProblem(
                "oauth2.refresh_token",
                "not connected yet: use \"Connect with Microsoft\" (the consent flow gives the refresh token, and saves the account)",
            ))
    if problems:
        raise InvalidAccount(problems)
    document = draft.model_dump(exclude={"password", "oauth2"})
    document["oauth2"] = oauth2.model_dump(exclude={"client_secret", "refresh_token"}) | {
        "client_secret": client_secret,
        "refresh_token": refresh_token,
    }
    try:
        return (AccountDraft if connecting else Account).model_validate(document)
    except ValidationError as error:
        raise InvalidAccount(validation_problems(error)) from None


def revealed_document(account: Account) -> dict[str, Any]:
    """The account as JSON-able data with its secrets in clear, for the encrypted pending consent only."""
    document = account.model_dump(mode="json")
    for holder, name, secret in (
        (document, "password", account.password),
        (document.get("oauth2") or {}, "client_secret", account.oauth2 and account.oauth2.client_secret),
        (document.get("oauth2") or {}, "refresh_token", account.oauth2 and account.oauth2.refresh_token),
    ):
        if name in holder:
            holder[name] = None if secret is None else secret.get_secret_value()
    return document


class AccountEditor:
    """Create, update, delete, enable, disable and check stored accounts, each change audited."""

    def __init__(
        self,
        engine: Engine,
        store: AccountStore,
        check_timeout: float,
        check_source: str | None = None,
        announce: Callable[[str, bool], None] | None = None,
    ) -> None:
        """``announce(account_id, deleted)`` runs after a change committed, to tell the
        fetcher owning the account (``services/fetcher/mailbox_ownership.py``)."""
        self._engine = engine
        self._store = store
        self._check_timeout = check_timeout
        self._check_source = check_source
        self._announce = announce or (lambda _account_id, _deleted: None)

    # --- reading ---------------------------------------------------------------
    def views(self) -> list[AccountView]:
        """Every account with its status; no password is decrypted."""
        statuses = self._statuses()
        return [
            AccountView(account=StoredAccountOut.model_validate(account.model_dump(exclude={"password"})), status=statuses.get(account.id))
            for account in self._store.configured_accounts()
        ]

    def view(self, account_id: str) -> AccountView:
        found = [view for view in self.views() if view.account.id == account_id]
        if not found:
            raise AccountNotFound(f"no account with id {account_id!r}")
        return found[0]

    def _statuses(self) -> dict[str, AccountStatusOut]:
        with self._engine.connect() as connection:
            rows = connection.execute(select(AccountStatus)).all()
        return {row.account_id: AccountStatusOut.model_validate(row) for row in rows}

    # --- writing ---------------------------------------------------------------
    def create(self, draft: AccountDraft, actor: str) -> Account:
        account = self._checked(kept_secrets(draft, None))

        def audit(connection: Connection, change: AccountChange) -> None:
            if change.action is not ChangeAction.ADDED:
                raise AccountExists(f"an account with id {account.id!r} exists already; edit it instead")
            AuditLog.write(connection, actor, "account.create", account.id)

        if self._store.upsert(account, on_change=audit).action is ChangeAction.UNCHANGED:
            raise AccountExists(f"an account with id {account.id!r} exists already; edit it instead")
        self._announce(account.id, False)
        return account

    def update(self, account_id: str, draft: AccountDraft, actor: str) -> Account:
        if draft.id != account_id:
            raise InvalidAccount([FieldProblem("id", f"an account's id cannot change (this is {account_id!r})")])
        account = self._checked(kept_secrets(draft, self._stored(account_id)))

        def audit(connection: Connection, change: AccountChange) -> None:
            if change.action is ChangeAction.ADDED:
                raise AccountNotFound(f"no account with id {account_id!r} (it was deleted meanwhile)")
            AuditLog.write(connection, actor, "account.update", account_id, change.fields)

        if self._store.upsert(account, on_change=audit).action is not ChangeAction.UNCHANGED:
            self._announce(account_id, False)
        return account

    def connect(self, account: Account, actor: str, *, editing: bool) -> None:
        """Store an account the consent flow gave its refresh token: a new one, or the
        stored one (``editing``), audited as ``account.oauth2_connect`` (field names only)."""
        account = self._checked(account)

        def audit(connection: Connection, change: AccountChange) -> None:
            if editing and change.action is ChangeAction.ADDED:
                raise AccountNotFound(f"no account with id {account.id!r} (it was deleted meanwhile)")
            if not editing and change.action is not ChangeAction.ADDED:
                raise AccountExists(f"an account with id {account.id!r} exists already; edit it and connect from there")
            fields = dict.fromkeys([*change.fields, "oauth2.refresh_token"])
            AuditLog.write(connection, actor, "account.oauth2_connect", account.id, list(fields))

        self._store.upsert(account, on_change=audit)
        self._announce(account.id, False)

    def stored(self, account_id: str) -> Account | None:
        """The stored account with its secrets, or None; for the consent flow, never for a response."""
        return self._store.get(account_id)

    def delete(self, account_id: str, actor: str) -> None:
        if not self._store.delete(account_id, on_change=self._audited(actor, "account.delete")):
            raise AccountNotFound(f"no account with id {account_id!r}")
        self._announce(account_id, True)

    def set_enabled(self, account_id: str, enabled: bool, actor: str) -> None:
        """A change is audited; enabling an enabled account changes nothing and records nothing."""
        action = "account.enable" if enabled else "account.disable"
        if not self._store.set_enabled(account_id, enabled, on_change=self._audited(actor, action)):
            raise AccountNotFound(f"no account with id {account_id!r}")
        self._announce(account_id, False)

    @staticmethod
    def _audited(actor: str, action: str) -> ChangeHook:
        def audit(connection: Connection, change: AccountChange) -> None:
            AuditLog.write(connection, actor, action, change.account_id, change.fields)

        return audit

    # --- checking --------------------------------------------------------------
    def check_stored(self, account_id: str) -> CheckReport:
        return check_account(
            self._stored(account_id), timeout=self._check_timeout, source_address=self._check_source, tokens=self._tokens()
        )

    def check_draft(self, draft: AccountDraft) -> CheckReport:
        """Check an unsaved account; an empty secret takes the stored one of the same id, if any."""
        return check_account(
            kept_secrets(draft, self._store.get(draft.id)),
            timeout=self._check_timeout,
            source_address=self._check_source,
            tokens=self._tokens(),
        )

    def _tokens(self) -> TokenBroker:
        """A fresh broker per check (it asks the provider afresh) that stores a refresh token the
        provider rotates: a rotating provider retires the stored one the moment the check uses it."""
        return TokenBroker(timeout=self._check_timeout, on_rotated_refresh_token=self._store.store_rotated_refresh_token)

    # --- internals -------------------------------------------------------------
    def _stored(self, account_id: str) -> Account:
        account = self._store.get(account_id)
        if account is None:
            raise AccountNotFound(f"no account with id {account_id!r}")
        return account

    def _checked(self, account: Account) -> Account:
        """The account, if everything its ticket options name exists."""
        options = account.ticket_options
        with self._engine.connect() as connection:
            missing = missing_reference_data(options, options.fallback_user, connection)
        if missing:
            # missing_reference_data words each problem as "<dotted field>: <why>".
            raise InvalidAccount([FieldProblem(*problem.split(": ", 1)) for problem in missing])
        return account

