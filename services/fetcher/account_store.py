"""Accounts stored in PostgreSQL (table ``accounts``), passwords encrypted at rest.

Every non-secret field of :class:`Account` lives in the ``settings`` JSONB column and is
validated by the model on the way in and on the way out; ``name``, ``protocol`` and
``enabled`` are mirrored into columns for listing. The password is only ever stored
as a Fernet token (see ``password_cipher``), and so are an OAuth2 account's client secret
and refresh token (one JSON object, ``oauth2_secrets_ciphertext``): ``settings`` never
holds them, not even masked.

An import is declarative: :func:`plan_import` (pure) compares the file with what is
stored, and only real changes are written, each bumping that account's ``revision``.
Reports name changed fields, never their values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import SecretStr, ValidationError
from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, text, update

from services.fetcher.account import Account
from services.fetcher.password_cipher import PasswordCipher, PasswordDecryptionError
from services.fetcher.tables import AccountStatus, StoredAccount


class StoredAccountInvalid(Exception):
    """A row of ``accounts`` no longer validates as an Account (names the account and the fields)."""


class ChangeAction(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"
    UNCHANGED = "unchanged"
    KEPT = "kept"
    """Stored but not in the file, and not removed because --prune was not given."""


@dataclass(frozen=True)
class AccountChange:
    account_id: str
    action: ChangeAction
    fields: tuple[str, ...] = ()
    """For CHANGED: the names of the fields that differ (``password`` included); never values."""


@dataclass(frozen=True)
class ImportReport:
    changes: tuple[AccountChange, ...]
    written: bool
    """False for a dry run."""

    def count(self, action: ChangeAction) -> int:
        return sum(1 for change in self.changes if change.action is action)

    @property
    def changes_anything(self) -> bool:
        return any(c.action in (ChangeAction.ADDED, ChangeAction.CHANGED, ChangeAction.REMOVED) for c in self.changes)

    def lines(self) -> list[str]:
        """The diff for people: one line per account, then a summary."""
        marks = {
            ChangeAction.ADDED: "+ added    ",
            ChangeAction.CHANGED: "~ changed  ",
            ChangeAction.REMOVED: "- removed  ",
            ChangeAction.UNCHANGED: "= unchanged",
            ChangeAction.KEPT: "! kept     ",
        }
        lines = []
        for change in self.changes:
            line = f"{marks[change.action]} {change.account_id}"
            if change.fields:
                line += ": " + ", ".join(change.fields)
            if change.action is ChangeAction.KEPT:
                line += " (not in the file; --prune removes it)"
            lines.append(line)
        summary = ", ".join(f"{self.count(action)} {action.value}" for action in ChangeAction if self.count(action))
        if not self.written:
            summary += " (dry run: nothing written)"
        lines.append(summary or "no accounts")
        return lines


#: The secret fields of the ``oauth2`` section, stored encrypted and never in ``settings``.
OAUTH2_SECRET_FIELDS = ("client_secret", "refresh_token")


@dataclass(frozen=True)
class StoredView:
    """What a plan compares against: the stored settings and the decrypted secrets (None if they do not decrypt)."""

    settings: Mapping[str, Any]
    password: SecretStr | None
    oauth2_secrets: Mapping[str, str] | None = None
    """client_secret and refresh_token, where stored."""


def oauth2_secrets_of(account: Account) -> dict[str, str]:
    """The OAuth2 secrets the account carries, by field name (empty for other methods)."""
    if account.oauth2 is None:
        return {}
    found = {name: getattr(account.oauth2, name) for name in OAUTH2_SECRET_FIELDS}
    return {name: value.get_secret_value() for name, value in found.items() if value is not None}


@dataclass(frozen=True)
class AccountSummary:
    """One line of `accounts list`; needs no key."""

    id: str
    name: str
    protocol: str
    host: str
    enabled: bool
    revision: int
    status: AccountStatusView | None


@dataclass(frozen=True)
class AccountStatusView:
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error_step: str | None
    last_error: str | None
    consecutive_failures: int

    def label(self) -> str:
        """``ok``, ``failing`` (with the step and count) or ``never polled``."""
        if self.consecutive_failures:
            return f"failing x{self.consecutive_failures} at {self.last_error_step or '?'}"
        if self.last_success_at:
            return f"ok {self.last_success_at:%Y-%m-%d %H:%M:%S}"
        return "never polled"


ChangeHook = Callable[[Connection, AccountChange], None]
"""Called with a real change inside its transaction (the admin's audit log); raising rolls the change back."""


def settings_of(account: Account) -> dict[str, Any]:
    """The JSONB ``settings`` of an account: every field but the password and the OAuth2 secrets.

    Excluded rather than dumped: a dump would write them masked ('**********'), and reading
    that back would replace the real secret with the mask.
    """
    return account.model_dump(mode="json", exclude={"password": True, "oauth2": set(OAUTH2_SECRET_FIELDS)})


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ, in a stable order."""
    names = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            names.extend(changed_fields(before, after, f"{prefix}{key}."))
        elif before != after:
            names.append(f"{prefix}{key}")
    return names


def account_change(account: Account, stored: StoredView | None) -> AccountChange:
    if stored is None:
        return AccountChange(account.id, ChangeAction.ADDED)
    fields = changed_fields(stored.settings, settings_of(account))
    stored_password = stored.password.get_secret_value() if stored.password is not None else None
    if stored_password != (account.password.get_secret_value() if account.password is not None else None):
        fields.append("password")
    stored_secrets = stored.oauth2_secrets or {}
    wanted_secrets = oauth2_secrets_of(account)
    fields.extend(f"oauth2.{name}" for name in OAUTH2_SECRET_FIELDS if stored_secrets.get(name) != wanted_secrets.get(name))
    return AccountChange(account.id, ChangeAction.CHANGED if fields else ChangeAction.UNCHANGED, tuple(fields))


def plan_import(stored: Mapping[str, StoredView], desired: Sequence[Account], prune: bool) -> list[AccountChange]:
    """What an import of ``desired`` does to ``stored``: file order first, then the accounts the file lacks."""
    plan = [account_change(account, stored.get(account.id)) for account in desired]
    wanted = {account.id for account in desired}
    missing = ChangeAction.REMOVED if prune else ChangeAction.KEPT
    plan.extend(AccountChange(account_id, missing) for account_id in sorted(set(stored) - wanted))
    return plan


class AccountStore:
    """Reads and writes the ``accounts`` table."""

    def __init__(self, engine: Engine, cipher: PasswordCipher | None) -> None:
        """``cipher`` may be None for the key-less operations (``summaries``, ``configured_accounts``, ``delete``)."""
        self._engine = engine
        self._cipher = cipher

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def cipher(self) -> PasswordCipher:
        if self._cipher is None:
            raise RuntimeError("this operation needs the encryption key; construct AccountStore with a cipher")
        return self._cipher

    # --- reading -------------------------------------------------------------
    def get(self, account_id: str) -> Account | None:
        with self._engine.connect() as connection:
            row = connection.execute(select(StoredAccount).where(StoredAccount.id == account_id)).first()
        return None if row is None else self._account(row)

    def all_accounts(self) -> list[Account]:
        return [self._account(row) for row in self._rows(enabled_only=False)]

    def enabled_accounts(self) -> list[Account]:
        """The accounts the fetcher polls, passwords decrypted."""
        return [self._account(row) for row in self._rows(enabled_only=True)]

    def configured_accounts(self) -> list[Account]:
        """Every account with empty secrets, for exports: they never need the key and never hold a secret."""
        return [
            self._validated(
                row,
                SecretStr("") if row.password_ciphertext is not None else None,
                dict.fromkeys(self._stored_secret_names(row), "") if row.oauth2_secrets_ciphertext is not None else {},
            )
            for row in self._rows(enabled_only=False)
        ]

    def summaries(self) -> list[AccountSummary]:
        query = (
            select(
                StoredAccount.id,
                StoredAccount.name,
                StoredAccount.protocol,
                StoredAccount.settings["host"].astext.label("host"),
                StoredAccount.enabled,
                StoredAccount.revision,
                AccountStatus.account_id.label("status_account_id"),
                AccountStatus.last_poll_at,
                AccountStatus.last_success_at,
                AccountStatus.last_error_at,
                AccountStatus.last_error_step,
                AccountStatus.last_error,
                AccountStatus.consecutive_failures,
            )
            .outerjoin(AccountStatus, AccountStatus.account_id == StoredAccount.id)
            .order_by(StoredAccount.id)
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            AccountSummary(
                id=row.id,
                name=row.name,
                protocol=row.protocol,
                host=row.host or "",
                enabled=row.enabled,
                revision=row.revision,
                status=None
                if row.status_account_id is None
                else AccountStatusView(
                    last_poll_at=row.last_poll_at,
                    last_success_at=row.last_success_at,
                    last_error_at=row.last_error_at,
                    last_error_step=row.last_error_step,
                    last_error=row.last_error,
                    consecutive_failures=row.consecutive_failures,
                ),
            )
            for row in rows
        ]

    # --- writing -------------------------------------------------------------
    def import_accounts(self, accounts: Sequence[Account], *, prune: bool = False, dry_run: bool = False) -> ImportReport:
        """Make the table match ``accounts`` (and, with ``prune``, hold nothing else), in one transaction."""
        with self._engine.begin() as connection:
            self._lock(connection)
            stored = {row.id: self._view(row) for row in connection.execute(select(StoredAccount))}
            plan = plan_import(stored, accounts, prune)
            if not dry_run:
                by_id = {account.id: account for account in accounts}
                for change in plan:
                    self._apply(connection, change, by_id.get(change.account_id))
        return ImportReport(tuple(plan), written=not dry_run)

    def upsert(self, account: Account, *, on_change: ChangeHook | None = None) -> AccountChange:
        """Store one account; the revision moves only when something differs."""
        with self._engine.begin() as connection:
            self._lock(connection)
            row = connection.execute(select(StoredAccount).where(StoredAccount.id == account.id)).first()
            change = account_change(account, None if row is None else self._view(row))
            self._apply(connection, change, account)
            if on_change is not None and change.action is not ChangeAction.UNCHANGED:
                on_change(connection, change)
        return change

    def delete(self, account_id: str, *, on_change: ChangeHook | None = None) -> bool:
        """Remove an account and its fetch status; its mailbox high-water marks stay, so re-adding it resumes."""
        with self._engine.begin() as connection:
            self._lock(connection)
            deleted = self._delete(connection, account_id)
            if deleted and on_change is not None:
                on_change(connection, AccountChange(account_id, ChangeAction.REMOVED))
        return deleted

    def set_enabled(self, account_id: str, enabled: bool, *, on_change: ChangeHook | None = None) -> bool:
        """Enable or disable polling; False if there is no such account. A real change bumps the revision."""
        with self._engine.begin() as connection:
            self._lock(connection)
            row = connection.execute(select(StoredAccount).where(StoredAccount.id == account_id)).first()
            if row is None:
                return False
            if row.enabled != enabled:
                if on_change is not None:
                    on_change(connection, AccountChange(account_id, ChangeAction.CHANGED, ("enabled",)))
                connection.execute(
                    update(StoredAccount)
                    .where(StoredAccount.id == account_id)
                    .values(
                        enabled=enabled,
                        settings={**row.settings, "enabled": enabled},
                        revision=StoredAccount.revision + 1,
                        updated_at=func.now(),
                    )
                )
        return True

    def reencrypt(self) -> int:
        """Re-encrypt every stored password under the first key (after a key rotation); returns how many.

        The revision stays: the configuration did not change.
        """
        count = 0
        with self._engine.begin() as connection:
            self._lock(connection)
            rows = connection.execute(
                select(StoredAccount.id, StoredAccount.password_ciphertext, StoredAccount.oauth2_secrets_ciphertext)
            ).all()
            for account_id, password, oauth2_secrets in rows:
                values = {
                    column: self.cipher.reencrypt(ciphertext, account_id)
                    for column, ciphertext in (("password_ciphertext", password), ("oauth2_secrets_ciphertext", oauth2_secrets))
                    if ciphertext is not None
                }
                if values:
                    connection.execute(update(StoredAccount).where(StoredAccount.id == account_id).values(**values))
                    count += 1
        return count

    def store_rotated_refresh_token(self, account_id: str, previous: str, new: str) -> bool:
        """Replace the stored refresh token ``previous`` by the one the provider rotated.

        Only if ``previous`` is still the stored one: a new consent stored meanwhile wins.
        The revision stays (the configuration did not change). Returns whether it was stored.
        """
        with self._engine.begin() as connection:
            self._lock(connection)
            row = connection.execute(
                select(StoredAccount.id, StoredAccount.oauth2_secrets_ciphertext).where(StoredAccount.id == account_id)
            ).first()
            if row is None or row.oauth2_secrets_ciphertext is None:
                return False
            secrets = self._decrypt_secrets(row.oauth2_secrets_ciphertext, account_id)
            if secrets.get("refresh_token") != previous:
                return False
            connection.execute(
                update(StoredAccount)
                .where(StoredAccount.id == account_id)
                .values(oauth2_secrets_ciphertext=self._encrypt_secrets({**secrets, "refresh_token": new}))
            )
        return True

    # --- internals -----------------------------------------------------------
    @staticmethod
    def _lock(connection: Connection) -> None:
        # Writers queue behind each other (two imports at once must not interleave); readers are not blocked.
        connection.execute(text("LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE"))

    def _rows(self, enabled_only: bool) -> Sequence[Row]:
        query = select(StoredAccount).order_by(StoredAccount.id)
        if enabled_only:
            query = query.where(StoredAccount.enabled)
        with self._engine.connect() as connection:
            return connection.execute(query).all()

    def _view(self, row: Row) -> StoredView:
        password, secrets = None, None
        # Secrets that do not decrypt count as changed: the file supplies them again, so an import repairs them.
        if row.password_ciphertext is not None:
            try:
                password = self.cipher.decrypt(row.password_ciphertext, row.id)
            except PasswordDecryptionError:
                password = None
        if row.oauth2_secrets_ciphertext is not None:
            try:
                secrets = self._decrypt_secrets(row.oauth2_secrets_ciphertext, row.id)
            except PasswordDecryptionError:
                secrets = None
        return StoredView(settings=row.settings, password=password, oauth2_secrets=secrets)

    def _account(self, row: Row) -> Account:
        oauth2 = row.settings.get("oauth2") is not None
        if row.password_ciphertext is None and not oauth2:
            raise StoredAccountInvalid(f"account {row.id!r} has no stored password; import it again")
        password = None if row.password_ciphertext is None else self.cipher.decrypt(row.password_ciphertext, row.id)
        secrets = {} if row.oauth2_secrets_ciphertext is None else self._decrypt_secrets(row.oauth2_secrets_ciphertext, row.id)
        return self._validated(row, password, secrets)

    def _encrypt_secrets(self, secrets: Mapping[str, str]) -> bytes:
        return self.cipher.encrypt(SecretStr(json.dumps(dict(secrets), sort_keys=True)))

    def _decrypt_secrets(self, ciphertext: bytes, account_id: str) -> dict[str, str]:
        return json.loads(self.cipher.decrypt(ciphertext, account_id).get_secret_value())

    @staticmethod
    def _stored_secret_names(row: Row) -> tuple[str, ...]:
        """Which OAuth2 secrets an account of this method has, without the key (for exports)."""
        method = row.settings.get("authentication")
        return ("client_secret", "refresh_token") if method == "oauth2_refresh_token" else ("client_secret",)

    @staticmethod
    def _validated(row: Row, password: SecretStr | None, oauth2_secrets: Mapping[str, str]) -> Account:
        settings = dict(row.settings)
        if oauth2_secrets and settings.get("oauth2") is not None:
            settings["oauth2"] = {**settings["oauth2"], **oauth2_secrets}
        try:
            return Account.model_validate({**settings, "id": row.id, "enabled": row.enabled, "password": password})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'account'}: {e['msg']}" for e in exc.errors(include_input=False)
            )
            raise StoredAccountInvalid(f"stored account {row.id!r} is not valid: {problems}") from None

    def _apply(self, connection: Connection, change: AccountChange, account: Account | None) -> None:
        if change.action is ChangeAction.REMOVED:
            self._delete(connection, change.account_id)
            return
        if change.action not in (ChangeAction.ADDED, ChangeAction.CHANGED) or account is None:
            return
        values = {
            "name": account.name,
            "protocol": account.protocol.value,
            "enabled": account.enabled,
            "settings": settings_of(account),
            "password_ciphertext": None if account.password is None else self.cipher.encrypt(account.password),
            "oauth2_secrets_ciphertext": self._encrypt_secrets(secrets) if (secrets := oauth2_secrets_of(account)) else None,
        }
        if change.action is ChangeAction.ADDED:
            connection.execute(insert(StoredAccount).values(id=account.id, **values))
        else:
            connection.execute(
                update(StoredAccount)
                .where(StoredAccount.id == account.id)
                .values(**values, revision=StoredAccount.revision + 1, updated_at=func.now())
            )

    @staticmethod
    def _delete(connection: Connection, account_id: str) -> bool:
        connection.execute(delete(AccountStatus).where(AccountStatus.account_id == account_id))
        return connection.execute(delete(StoredAccount).where(StoredAccount.id == account_id)).rowcount > 0
