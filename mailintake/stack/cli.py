"""`mailintake stack up | down | status | logs`."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from .errors import StackError
from .settings import StackSettings
from .stack import COMPONENT_NAMES, Stack

stack_app = typer.Typer(
    help="Run the local stack (Kafka, PostgreSQL, OpenID Connect provider, Dovecot, SMTP relay) on 127.0.0.1.",
    no_args_is_help=True,
)


def _stack() -> Stack:
    try:
        return Stack(StackSettings())
    except ValueError as exc:
        typer.secho(f"invalid MAILINTAKE_STACK_* settings: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def _fail(exc: StackError) -> None:
    typer.secho(str(exc), fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _progress(message: str) -> None:
    typer.echo(f"  {message}")


@stack_app.command()
def up() -> None:
    """Start every server that is not running and wait until each one answers."""
    stack = _stack()
    started = time.monotonic()
    try:
        endpoints = stack.up(progress=_progress)
    except StackError as exc:
        _fail(exc)
        return
    typer.echo(f"stack is up ({time.monotonic() - started:.1f} s), state in {endpoints.state_dir}")
    typer.echo(f"  kafka bootstrap: {endpoints.kafka_bootstrap}")
    typer.echo(f"  database url:    {endpoints.database_url}")
    typer.echo(
        f"  imap:            {endpoints.host}:{endpoints.imap_port} (STARTTLS), imaps :{endpoints.imaps_port}"
    )
    typer.echo(f"  pop3:            {endpoints.host}:{endpoints.pop3_port} (STLS), pop3s :{endpoints.pop3s_port}")
    typer.echo(f"  smtp:            {endpoints.host}:{endpoints.smtp_port} (STARTTLS + AUTH)")
    typer.echo(f"  oidc issuer:     {endpoints.oidc_issuer}")
    for client in endpoints.oidc_clients:
        secret = f" / {client.client_secret}" if client.client_secret else ""
        typer.echo(f"    client {client.client_id}{secret}: {client.purpose}")
    typer.echo(f"  CA file:         {endpoints.ca_file}")
    users = ", ".join(f"{u.name}/{u.password}" for u in endpoints.demo_users)
    typer.echo(f"  mailboxes:       {users} (address NAME@{endpoints.mail_domain})")


@stack_app.command()
def down() -> None:
    """Stop every server of the stack; fails if any of its processes survives."""
    try:
        _stack().down(progress=_progress)
    except StackError as exc:
        _fail(exc)
    typer.echo("stack is down")


@stack_app.command()
def status() -> None:
    """Show each component's address and health; exit code 3 unless all are running."""
    colours = {"running": typer.colors.GREEN, "stopped": typer.colors.YELLOW, "unhealthy": typer.colors.RED}
    all_running = True
    for item in _stack().status():
        all_running &= item.state == "running"
        pid = f"pid {item.pid}" if item.pid else ""
        state = typer.style(f"{item.state:<9}", fg=colours[item.state])
        typer.echo(f"{item.name:<9} {state} {pid:<11} {item.address}")
        if item.detail:
            typer.echo(f"{'':<9} {item.detail}")
    if not all_running:
        raise typer.Exit(3)


@stack_app.command()
def logs(
    component: Annotated[
        str | None, typer.Argument(help=f"One of: {', '.join(COMPONENT_NAMES)}; all when omitted.")
    ] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="Lines per component.")] = 40,
) -> None:
    """Show the last lines of the component logs."""
    try:
        tails = _stack().logs(component, lines)
    except StackError as exc:
        _fail(exc)
        return
    for name, text in tails.items():
        if len(tails) > 1:
            typer.secho(f"==> {name} <==", bold=True)
        typer.echo(text or "(no log yet)")
