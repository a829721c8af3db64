"""`mailintake accounts import | export | list | generate-key | reencrypt`.

The commands are registered on the fetcher's ``accounts_app`` (``services/fetcher/cli.py``)
by :func:`register_account_commands`. The database comes from
``MAILINTAKE_FETCHER_DATABASE_URL``, the key from ``MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS``
or ``MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE``; `list` and `export` need no key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from services.fetcher.account import Account
    from services.fetcher.account_store import AccountStore

# The modules behind the commands (SQLAlchemy, cryptography) are imported inside them,
# so `mailintake --help` stays quick.


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _store(with_key: bool) -> AccountStore:
    from mailintake.database import engine_for
    from mailintake.runtime.settings import InvalidSettings, load_settings
    from services.fetcher.account_store import AccountStore
    from services.fetcher.password_cipher import EncryptionKeyError, PasswordCipher, cipher_from_settings
    from services.fetcher.settings import AccountEncryptionSettings, FetcherSettings

    try:
        url = load_settings(FetcherSettings).database_url.get_secret_value()
        cipher: PasswordCipher | None = (
            cipher_from_settings(load_settings(AccountEncryptionSettings)) if with_key else None
        )
    except (InvalidSettings, EncryptionKeyError) as exc:
        _fail(str(exc))
        raise  # unreachable: _fail raises
    return AccountStore(engine_for(url), cipher)


def stored_account(account_id: str) -> Account:
    """The stored account ``account_id`` with its password decrypted, or exit 2 saying why."""
    from services.fetcher.password_cipher import PasswordDecryptionError

    try:
        account = _store(with_key=True).get(account_id)
    except PasswordDecryptionError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail raises
    if account is None:
        _fail(f"no stored account {account_id!r} (see `mailintake accounts list`)")
    return account


def import_command(
    file: Path = typer.Argument(..., help="YAML file with an 'accounts:' list."),
    prune: bool = typer.Option(False, "--prune", help="Remove stored accounts that are not in the file."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change; write nothing."),
) -> None:
    """Make the stored accounts match FILE and print what changed (never a password).

    Passwords in FILE may be {env: VARIABLE}, {file: path} (relative to FILE) or inline.
    Importing the same file twice changes nothing.
    """
    from services.fetcher.account import InvalidAccountFile
    from services.fetcher.account_file import read_account_file
    from services.fetcher.account_store import StoredAccountInvalid
    from services.fetcher.password_cipher import PasswordDecryptionError

    try:
        accounts = read_account_file(file)
    except InvalidAccountFile as exc:
        _fail(f"invalid accounts file: {exc}")
    store = _store(with_key=True)
    problems = _missing_reference_data(store, accounts)
    if problems:
        _fail("nothing imported; the ticket options name what does not exist:\n" + "\n".join(problems))
    try:
        report = store.import_accounts(accounts, prune=prune, dry_run=dry_run)
    except (PasswordDecryptionError, StoredAccountInvalid) as exc:
        _fail(str(exc))
    for line in report.lines():
        typer.echo(line)
    if report.written:
        _announce(report)


def _missing_reference_data(store: AccountStore, accounts: list[Account]) -> list[str]:
    """One line per account and field whose resource, category, priority or fallback user
    does not exist: an error now, at import, rather than at the account's first mail."""
    from services.ticketer.reference_data import missing_reference_data

    problems = []
    with store.engine.connect() as connection:
        for account in accounts:
            options = account.ticket_options
            problems += [
                f"  {account.id}: {problem}" for problem in missing_reference_data(options, options.fallback_user, connection)
            ]
    return problems


def _announce(report) -> None:
    """Tell the fetcher replicas owning the changed accounts to read them again now."""
    from datetime import UTC, datetime

    from mailintake.contracts.records import AccountNotice
    from mailintake.runtime.settings import load_settings
    from services.fetcher.account_store import ChangeAction
    from services.fetcher.mailbox_ownership import announce_account_changes
    from services.fetcher.settings import FetcherSettings

    now = datetime.now(UTC)
    notices = [
        AccountNotice(account_id=c.account_id, deleted=c.action is ChangeAction.REMOVED, changed_at=now)
        for c in report.changes
        if c.action in (ChangeAction.ADDED, ChangeAction.CHANGED, ChangeAction.REMOVED)
    ]
    if not notices:
        return
    settings = load_settings(FetcherSettings)
    try:
        announce_account_changes(settings.kafka_bootstrap_servers, notices, timeout_seconds=settings.timeout_seconds)
    except Exception as exc:  # noqa: BLE001 - the accounts are stored; only the shortcut failed
        typer.secho(
            f"stored, but the change notice to the fetchers failed ({type(exc).__name__}: {exc}); they pick the "
            f"change up at their next refresh, within {settings.accounts_refresh_seconds:.0f}s",
            fg=typer.colors.YELLOW,
            err=True,
        )


def export_command(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of standard output."),
) -> None:
    """Write the stored accounts as YAML; each password is a reference {env: MAILINTAKE_ACCOUNT_<ID>_PASSWORD}."""
    from services.fetcher.account_file import export_text
    from services.fetcher.account_store import StoredAccountInvalid

    try:
        text = export_text(_store(with_key=False).configured_accounts())
    except (StoredAccountInvalid, ValueError) as exc:
        _fail(str(exc))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}")


def list_command() -> None:
    """List the stored accounts with the fetcher's last status of each."""
    summaries = _store(with_key=False).summaries()
    if not summaries:
        typer.echo("no accounts")
        return
    typer.echo(f"{'ID':<24} {'NAME':<24} {'PROTOCOL':<8} {'HOST':<28} {'ENABLED':<7} STATUS")
    for s in summaries:
        status = s.status.label() if s.status else "never polled"
        typer.echo(f"{s.id:<24} {s.name[:24]:<24} {s.protocol:<8} {s.host[:28]:<28} {'yes' if s.enabled else 'no':<7} {status}")


def generate_key_command() -> None:
    """Print a new random key for MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS (nothing is stored)."""
    from services.fetcher.password_cipher import generate_key

    typer.echo(generate_key())


def reencrypt_command() -> None:
    """Re-encrypt every stored password under the first key (the second step of a key rotation)."""
    from services.fetcher.password_cipher import PasswordDecryptionError

    try:
        count = _store(with_key=True).reencrypt()
    except PasswordDecryptionError as exc:
        _fail(str(exc))
    typer.echo(f"re-encrypted {count} passwords")


def register_account_commands(accounts_app: typer.Typer) -> None:
    """Add the commands of this module to the ``accounts`` sub-app."""
    accounts_app.command("import")(import_command)
    accounts_app.command("export")(export_command)
    accounts_app.command("list")(list_command)
    accounts_app.command("generate-key")(generate_key_command)
    accounts_app.command("reencrypt")(reencrypt_command)
