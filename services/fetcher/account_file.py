"""The accounts YAML file as `accounts import` reads it and `accounts export` writes it.

A password in the file is one of::

    password: {env: DESK_PASSWORD}        # an environment variable
    password: {file: secrets/desk}        # a file, relative to the YAML file
    password: s3cret                      # inline, for local use only

An export never holds a password: each one becomes a reference to the variable
``MAILINTAKE_ACCOUNT_<ID>_PASSWORD``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from services.fetcher.account import Account, InvalidAccountFile

EXPORT_HEADER = (
    "# Exported by `mailintake accounts export`. Passwords are not in this file: set each\n"
    "# MAILINTAKE_ACCOUNT_<ID>_PASSWORD variable (or change the reference) before `accounts import`;\n"
    "# OAuth2 secrets likewise: MAILINTAKE_ACCOUNT_<ID>_CLIENT_SECRET and _REFRESH_TOKEN.\n"
)


class PasswordReferenceError(ValueError):
    """A password reference cannot be resolved; the message says which variable or file."""


def password_variable(account_id: str, secret: str = "password") -> str:
    """The environment variable an export refers to for this account's password (or its
    OAuth2 ``client_secret`` / ``refresh_token``)."""
    return "MAILINTAKE_ACCOUNT_" + re.sub(r"[^A-Z0-9]", "_", account_id.upper()) + "_" + secret.upper()


#: Secrets of the oauth2 section that take the same references as the password.
OAUTH2_SECRETS = ("client_secret", "refresh_token")


def resolve_password(value: object, base_dir: Path, environ: Mapping[str, str]) -> object:
    """The password a file entry means: a reference is looked up, anything else is left to the model to validate."""
    if not isinstance(value, dict):
        return value
    if len(value) != 1 or next(iter(value)) not in ("env", "file"):
        raise PasswordReferenceError("must be a string, {env: VARIABLE} or {file: path}")
    (kind, target), = value.items()
    if not isinstance(target, str) or not target:
        raise PasswordReferenceError(f"{{{kind}: ...}} needs a name")
    if kind == "env":
        if target not in environ:
            raise PasswordReferenceError(f"environment variable {target} is not set")
        return environ[target]
    path = base_dir / target
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordReferenceError(f"file {path} cannot be read ({exc.__class__.__name__})") from None
    # Only the line break an editor or `echo` adds is dropped; other whitespace may be part of the password.
    return text.removesuffix("\n").removesuffix("\r")


def _label(entry: object, index: int) -> str:
    return str(entry.get("id", f"#{index}")) if isinstance(entry, dict) else f"#{index}"


def read_account_file(path: Path, environ: Mapping[str, str] | None = None) -> list[Account]:
    """Every account of the file, validated, with password references resolved.

    Errors name the file, the account and the field, and never echo a password.
    """
    environ = os.environ if environ is None else environ
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidAccountFile(f"{path}: {exc}") from None
    entries = document.get("accounts") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidAccountFile(f"{path}: expected a top-level 'accounts:' list")
    accounts = []
    for index, entry in enumerate(entries):
        label = _label(entry, index)
        if isinstance(entry, dict):
            entry = dict(entry)
            if entry.get("ca_file"):
                entry["ca_file"] = str(path.parent / entry["ca_file"])
            if "password" in entry:
                try:
                    entry["password"] = resolve_password(entry["password"], path.parent, environ)
                except PasswordReferenceError as exc:
                    raise InvalidAccountFile(f"{path}: account {label}: password: {exc}") from None
            if isinstance(entry.get("oauth2"), dict):
                oauth2 = entry["oauth2"] = dict(entry["oauth2"])
                for name in ("ca_file", "certificate_file"):
                    if oauth2.get(name):
                        oauth2[name] = str(path.parent / oauth2[name])
                for name in OAUTH2_SECRETS:
                    if name in oauth2:
                        try:
                            oauth2[name] = resolve_password(oauth2[name], path.parent, environ)
                        except PasswordReferenceError as exc:
                            raise InvalidAccountFile(f"{path}: account {label}: oauth2.{name}: {exc}") from None
        try:
            accounts.append(Account.model_validate(entry))
        except ValidationError as exc:
            # include_input=False keeps a mistyped password out of the message.
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'account'}: {error['msg']}"
                for error in exc.errors(include_input=False)
            )
            raise InvalidAccountFile(f"{path}: account {label}: {problems}") from None
    ids = [account.id for account in accounts]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidAccountFile(f"{path}: duplicate account ids {duplicates}")
    return accounts


def exported_entry(account: Account) -> dict[str, Any]:
    """One account as an export writes it: fields that differ from the defaults, secrets as references."""
    entry: dict[str, Any] = {"id": account.id, "name": account.name, "protocol": account.protocol.value}
    dumped = account.model_dump(mode="json", exclude={"password": True, "oauth2": set(OAUTH2_SECRETS)}, exclude_defaults=True)
    for field, value in dumped.items():
        entry.setdefault(field, value)
        if field == "username" and account.password is not None:
            entry["password"] = {"env": password_variable(account.id)}
    if account.oauth2 is not None:
        oauth2 = entry["oauth2"] = dict(account.oauth2.model_dump(mode="json", exclude=set(OAUTH2_SECRETS), exclude_defaults=True))
        for name in OAUTH2_SECRETS:
            if getattr(account.oauth2, name) is not None:
                oauth2[name] = {"env": password_variable(account.id, name)}
    return entry


def export_text(accounts: Sequence[Account]) -> str:
    """The YAML of an export; refuses ids whose password variables would collide."""
    variables: dict[str, str] = {}
    for account in accounts:
        other = variables.setdefault(password_variable(account.id), account.id)
        if other != account.id:
            raise ValueError(
                f"accounts {other!r} and {account.id!r} would share the variable {password_variable(account.id)}"
            )
    body = yaml.safe_dump(
        {"accounts": [exported_entry(account) for account in sorted(accounts, key=lambda a: a.id)]},
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=None,
    )
    return EXPORT_HEADER + body
