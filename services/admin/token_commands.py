"""`mailintake admin token create | list | revoke`: the admin service's bearer tokens.

The database comes from ``MAILINTAKE_ADMIN_DATABASE_URL``. A token is printed once,
when it is created; only its SHA-256 is stored.
"""

from __future__ import annotations

import typer

admin_app = typer.Typer(help="The admin service (web page and API).", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens of the admin API and page.", no_args_is_help=True)
admin_app.add_typer(token_app, name="token")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _engine():  # noqa: ANN202 - an Engine; SQLAlchemy is imported lazily so `mailintake --help` stays quick
    from mailintake.database import engine_for
    from mailintake.runtime.settings import InvalidSettings, load_settings
    from services.admin.settings import AdminSettings

    try:
        url = load_settings(AdminSettings).database_url.get_secret_value()
    except InvalidSettings as exc:
        _fail(str(exc))
        raise  # unreachable: _fail raises
    return engine_for(url)


@token_app.command("create")
def create_token(
    name: str = typer.Argument(..., help="Who holds the token (e.g. a person's login); the audit log records it."),
) -> None:
    """Create a token named NAME and print it once: it cannot be shown again.

    Use it as `Authorization: Bearer TOKEN` on the API, or on the page's login form.
    """
    from services.admin.access import AuditLog, TokenStore

    engine = _engine()
    try:
        token = TokenStore(engine).create(name)
    except ValueError as exc:  # a bad or taken name (TokenNameTaken)
        _fail(str(exc))
    AuditLog(engine).record("cli", "token.create", name)
    typer.secho(f"token {name!r} created; it is shown only this once:", err=True)
    typer.echo(token)


@token_app.command("list")
def list_tokens() -> None:
    """List the tokens by name, with when they were created or revoked (never the tokens)."""
    from services.admin.access import TokenStore

    tokens = TokenStore(_engine()).tokens()
    if not tokens:
        typer.echo("no tokens (create one with `mailintake admin token create NAME`)")
    for info in tokens:
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M:%S}" if info.revoked_at else "live"
        typer.echo(f"{info.name:<32} created {info.created_at:%Y-%m-%d %H:%M:%S}  {state}")


@token_app.command("revoke")
def revoke_token(name: str = typer.Argument(..., help="Name of the token to revoke.")) -> None:
    """Revoke the token NAME: it stops working at once, also for pages logged in with it."""
    from services.admin.access import AuditLog, TokenStore

    engine = _engine()
    if not TokenStore(engine).revoke(name):
        _fail(f"no live token named {name!r}", code=1)
    AuditLog(engine).record("cli", "token.revoke", name)
    typer.echo(f"revoked {name!r}")
