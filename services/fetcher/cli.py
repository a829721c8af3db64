"""`mailintake accounts ...`: the fetcher's account commands (``check`` here; the stored
accounts' commands are added to the same ``accounts_app``)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

accounts_app = typer.Typer(help="Mail accounts.", no_args_is_help=True)


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@accounts_app.command("check")
def check_command(
    account_id: str | None = typer.Argument(
        None, help="Check only this account: a stored one, or one in --file."
    ),
    file: Path | None = typer.Option(
        None, "--file", "-f", help="Check the (unsaved) accounts of this YAML file instead of the stored ones."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array with one report per account checked."),
    timeout: float = typer.Option(30.0, min=0.1, help="Seconds each step may take."),
    source_address: str | None = typer.Option(
        None, "--source-address", help="Local address to connect from (on hosts with several)."
    ),
) -> None:
    """Check the connection of a stored account (ACCOUNT_ID), or of the accounts in --file, step by step.

    Steps: an access token from the identity provider (OAuth2 accounts only); TCP connect; TLS handshake,
    the certificate verified (ca_file or system store); capabilities; authentication with the account's
    method; select the folder read-only (IMAP) or STAT (POP3).

    Each step is shown with its time; a failure shows the identity provider's or the mail server's reply
    exactly as it sent it. Nothing on the server changes, and no password, secret or token is printed.

    Exit status: 0 every account passed, 1 an account failed, 2 the accounts could not be read.
    """
    from services.fetcher.account import InvalidAccountFile
    from services.fetcher.account_file import read_account_file
    from services.fetcher.connection_check import check_account

    if file is None:
        if account_id is None:
            _fail("name a stored ACCOUNT_ID, or pass --file ACCOUNTS.yaml")
        from services.fetcher.account_commands import stored_account

        accounts = [stored_account(account_id)]
    else:
        try:
            accounts = read_account_file(file)
        except InvalidAccountFile as exc:
            _fail(f"invalid accounts file: {exc}")
            return
        if account_id is not None:
            accounts = [a for a in accounts if a.id == account_id]
            if not accounts:
                _fail(f"{file}: no account with id {account_id!r}")
    reports = [check_account(a, timeout=timeout, source_address=source_address) for a in accounts]
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in reports], indent=2, ensure_ascii=False))
    else:
        for report in reports:
            typer.echo(_render(report))
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def _render(report) -> str:  # noqa: ANN001 - CheckReport, imported lazily to keep `mailintake --help` fast
    lines = [
        f"{report.account_id}: {report.protocol} {report.host}:{report.port}, security {report.security}, "
        f"user {report.username}, {report.authentication}"
    ]
    for step in report.steps:
        lines.append(f"  {step.name:<15} {step.outcome.value.upper():<8} {step.milliseconds:>8.1f} ms  {step.detail}")
        if step.server_reply is not None:
            lines.append(f"  {'':<15} server: {step.server_reply}")
    failure = report.failure
    if failure is None:
        lines.append("  OK")
    else:
        lines.append(f"  FAILED at {failure.name}: {failure.server_reply or failure.detail}")
    return "\n".join(lines)


# Stored accounts: import, export, list, generate-key, reencrypt (services/fetcher/account_commands.py).
from services.fetcher.account_commands import register_account_commands  # noqa: E402 - after accounts_app exists

register_account_commands(accounts_app)
