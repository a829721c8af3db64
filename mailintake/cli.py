"""The `mailintake` command."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from mailintake.contracts.cli import topics_app
from mailintake.dead_letters.cli import dlq_app
from mailintake.stack.cli import stack_app
from services.admin.token_commands import admin_app
from services.fetcher.account_commands import import_command
from services.fetcher.cli import accounts_app
from services.ticketer.reference_data_cli import refdata_app

app = typer.Typer(
    help="mailintake: mailboxes -> Kafka -> tickets in PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _log_to_stderr() -> None:
    from mailintake.runtime.logs import configure_cli_logging

    configure_cli_logging()


app.add_typer(stack_app, name="stack")
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(accounts_app, name="accounts")
app.add_typer(refdata_app, name="refdata")
app.add_typer(admin_app, name="admin")

db_app = typer.Typer(help="The PostgreSQL schema (Alembic migrations).", no_args_is_help=True)
tickets_app = typer.Typer(help="Read tickets back.", no_args_is_help=True)
config_app = typer.Typer(help="Settings of the services.", no_args_is_help=True)
templates_app = typer.Typer(help="Auto-answer templates.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tickets_app, name="tickets")
app.add_typer(config_app, name="config")
app.add_typer(templates_app, name="templates")


class ServiceName(StrEnum):
    fetcher = "fetcher"
    classifier = "classifier"
    ticketer = "ticketer"
    sender = "sender"
    admin = "admin"
    all = "all"


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _database_url() -> str:
    from mailintake.runtime.settings import InvalidSettings, load_settings
    from services.ticketer.settings import TicketerSettings

    try:
        return load_settings(TicketerSettings).database_url.get_secret_value()
    except InvalidSettings as exc:
        _fail(str(exc))
        raise  # unreachable; keeps type checkers calm


@stack_app.command("env")
def stack_env() -> None:
    """Print `export` lines that point every service at the local stack (for `eval`)."""
    import shlex

    from mailintake.local_environment import service_environment
    from mailintake.stack import Stack

    endpoints = Stack().endpoints
    for name, value in service_environment(endpoints).items():
        typer.echo(f"export {name}={shlex.quote(value)}")
    # Comments, so that `eval` skips them: what an OAuth2 account of the stack uses.
    typer.echo(f"# OpenID Connect issuer: {endpoints.oidc_issuer} (CA file {endpoints.ca_file})")
    for client in endpoints.oidc_clients:
        secret = f" / {client.client_secret}" if client.client_secret else ""
        typer.echo(f"# client {client.client_id}{secret}: {client.purpose}")


@app.command("run")
def run(
    service: ServiceName = typer.Argument(..., help="fetcher, classifier, ticketer, sender, admin, or all (all but admin, each as its own process)."),
    accounts: Path | None = typer.Option(
        None, "--accounts", help="Import this accounts file into the stored accounts first (as `accounts import`, without --prune)."
    ),
) -> None:
    """Run a service until SIGTERM/SIGINT. Settings come from the environment (see `config reference`)."""
    from mailintake.runtime.settings import InvalidSettings

    if service is ServiceName.all:
        from mailintake.database.migrate import upgrade
        from mailintake.local_supervisor import supervise
        from mailintake.runtime.logs import configure_logging

        configure_logging("supervisor")
        upgrade(_database_url())
        if accounts is not None:
            import_command(file=accounts, prune=False, dry_run=False)
        raise typer.Exit(supervise({}))
    if accounts is not None:
        import_command(file=accounts, prune=False, dry_run=False)
    from mailintake.runtime.service_runner import run_service

    try:
        if service is ServiceName.fetcher:
            from services.fetcher.password_cipher import EncryptionKeyError
            from services.fetcher.service import run as loop
            from services.fetcher.settings import FetcherSettings

            try:
                run_service("fetcher", FetcherSettings, loop)
            except EncryptionKeyError as exc:
                _fail(str(exc))
        elif service is ServiceName.classifier:
            from services.classifier.service import run as loop
            from services.classifier.settings import ClassifierSettings

            run_service("classifier", ClassifierSettings, loop)
        elif service is ServiceName.sender:
            from services.sender.service import run as loop
            from services.sender.settings import SenderSettings

            run_service("sender", SenderSettings, loop)
        elif service is ServiceName.admin:
            from mailintake.runtime.settings import load_settings
            from services.admin.app import serve
            from services.admin.settings import AdminSettings

            serve(load_settings(AdminSettings))
        else:
            from services.ticketer.service import check_schema, run as loop
            from services.ticketer.settings import TicketerSettings

            run_service("ticketer", TicketerSettings, loop, prepare=check_schema)
    except InvalidSettings as exc:
        _fail(str(exc))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all Alembic migrations (idempotent). Uses MAILINTAKE_TICKETER_DATABASE_URL."""
    from mailintake.database.migrate import current_revision, upgrade

    url = _database_url()
    upgrade(url)
    typer.echo(f"database at revision {current_revision(url)}")


@tickets_app.command("list")
def tickets_list(
    limit: int = typer.Option(50, min=1, help="At most this many, newest first."),
    status: str | None = typer.Option(None, help="Only tickets with this status (open, closed)."),
    account: str | None = typer.Option(None, help="Only tickets that came in on the account with this id."),
) -> None:
    """List tickets, newest first."""
    from mailintake.database import engine_for
    from services.ticketer.queries import TicketFilter, list_tickets

    rows = list_tickets(engine_for(_database_url()), TicketFilter(status=status, account=account), limit=limit)
    if not rows:
        typer.echo("no tickets")
        return
    typer.echo(f"{'NUMBER':>8}  {'STATUS':<7} {'CREATED':<19}  {'REQUESTER':<30} SUBJECT")
    for t in rows:
        typer.echo(f"{t.number:>8}  {t.status:<7} {t.created_at:%Y-%m-%d %H:%M:%S}  {t.requester:<30} {t.subject}")


@tickets_app.command("show")
def tickets_show(number: int = typer.Argument(..., help="Ticket number.")) -> None:
    """Show one ticket with its steps in order."""
    from mailintake.database import engine_for
    from services.ticketer.queries import ticket_with_steps

    ticket, steps = ticket_with_steps(engine_for(_database_url()), number)
    if ticket is None:
        _fail(f"no ticket {number}", code=1)
    typer.echo(f"Ticket {ticket.number} {ticket.reference}  [{ticket.status}]")
    typer.echo(f"Subject:   {ticket.subject}")
    typer.echo(f"Requester: {ticket.requester}")
    typer.echo(f"Account:   {ticket.source_account_id}")
    for label, value in (("Category", ticket.category), ("Priority", ticket.priority), ("Resource", ticket.resource)):
        if value:
            typer.echo(f"{label + ':':<10} {value}")
    typer.echo(f"Created:   {ticket.created_at:%Y-%m-%d %H:%M:%S}")
    for step in steps:
        typer.echo(f"\n--- step {step.position} ({step.direction}) {step.created_at:%Y-%m-%d %H:%M:%S} from {step.sender}")
        typer.echo(f"Message-ID: {step.message_id}")
        typer.echo(step.body_text.rstrip())


@templates_app.command("import")
def templates_import(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML file with a 'templates:' list.")) -> None:
    """Check every template in FILE, then store them all (replacing same-named ones), or none.

    Uses MAILINTAKE_TICKETER_DATABASE_URL.
    """
    from mailintake.database import engine_for
    from services.ticketer.auto_answer_outbox import import_templates
    from services.ticketer.auto_answer_templates import InvalidTemplate, parse_template_file

    try:
        templates = parse_template_file(file.read_text(encoding="utf-8"))
    except InvalidTemplate as exc:
        _fail(f"{file}: {exc}")
    with engine_for(_database_url()).begin() as connection:
        import_templates(connection, templates)
    typer.echo(f"imported {len(templates)} template(s): {', '.join(t.name for t in templates)}")


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown) generated from the settings classes."""
    from mailintake.runtime.settings_reference import settings_reference

    typer.echo(settings_reference())

@app.command("demo")
def demo(
    keep_running: bool = typer.Option(
        True, "--keep-running/--exit-when-done", help="Keep the pipeline running after the demo mails became tickets."
    ),
    timeout: float = typer.Option(120.0, help="Seconds to wait for the demo mails to become tickets."),
) -> None:
    """Seed the demo mailbox, run the pipeline on it, and show the tickets it made.

    Needs the local stack (`mailintake stack up`), the topics and the schema; `./dev run`
    does all of that first.
    """
    import os
    import subprocess
    import sys

    from mailintake.demo import demo_account_id, seed, wait_for_tickets, write_accounts_file
    from mailintake.stack import Stack

    endpoints = Stack().endpoints
    accounts = write_accounts_file(endpoints, endpoints.state_dir / "demo-accounts.yaml", "demo")
    account_id = demo_account_id("demo")
    before = wait_for_tickets(endpoints.database_url, account_id, 0, 0)
    seeded = seed(endpoints)
    typer.echo(f"put {seeded} demo mails into {endpoints.user('demo').address}; starting fetcher, classifier, ticketer")
    from mailintake.local_environment import service_environment

    pipeline = subprocess.Popen(
        [sys.executable, "-m", "mailintake", "run", "all", "--accounts", str(accounts)],
        env={**os.environ, **service_environment(endpoints)},
    )
    try:
        handled = wait_for_tickets(endpoints.database_url, account_id, before + seeded, timeout)
        if handled < before + seeded:
            _fail(f"only {handled - before} of {seeded} demo mails were handled within {timeout:.0f}s; see the logs above")
        typer.echo("")
        # Only the demo account's: after a test run the database holds the tests' tickets too.
        tickets_list(limit=10, status=None, account=account_id)
        if keep_running:
            typer.echo("\nThe pipeline keeps polling the demo mailbox; press Ctrl-C to stop.")
            pipeline.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if pipeline.poll() is None:
            pipeline.terminate()
            pipeline.wait(timeout=30)
