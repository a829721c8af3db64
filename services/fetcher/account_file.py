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
    "# MAILINTAKE_ACCOUNT_<ID>_PASSWORD variable (or change the reference) before `accounts import`.\n"
)


class PasswordReferenceError(ValueError):
    """A password reference cannot be resolved; the message says which variable or file."""


def password_variable(account_id: str) -> str:
    """The environment variable an export refers to for this account's password."""
    return "MAILINTAKE_ACCOUNT_" + re.sub(r"[^A-Z0-9]", "_", account_id.upper()) + "_PASSWORD"


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
    """One account as an export writes it: fields that differ from the defaults, the password as a reference."""
    entry: dict[str, Any] = {"id": account.id, "name": account.name, "protocol": account.protocol.value}
    for field, value in account.model_dump(mode="json", exclude={"password"}, exclude_defaults=True).items():
        entry.setdefault(field, value)
        if field == "username":
            entry["password"] = {"env": password_variable(account.id)}
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
