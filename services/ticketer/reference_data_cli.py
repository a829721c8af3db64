"""`mailintake refdata import FILE` and `mailintake refdata list`."""

from __future__ import annotations

from pathlib import Path

import typer

refdata_app = typer.Typer(
    help="Reference data new tickets name: resources, categories, priorities.", no_args_is_help=True
)


def _engine():
    from mailintake.database import engine_for
    from mailintake.runtime.settings import InvalidSettings, load_settings
    from services.ticketer.settings import TicketerSettings

    try:
        return engine_for(load_settings(TicketerSettings).database_url.get_secret_value())
    except InvalidSettings as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@refdata_app.command("import")
def import_file(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML with resources, categories, priorities."),
) -> None:
    """Insert the file's entries, or update their descriptions; nothing is deleted."""
    from services.ticketer.reference_data import InvalidReferenceData, import_reference_data, parse_reference_data

    try:
        data = parse_reference_data(file)
    except InvalidReferenceData as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    with _engine().begin() as connection:
        counts = import_reference_data(connection, data)
    typer.echo(", ".join(f"{count} {kind}" for kind, count in counts.items()) + " imported")


@refdata_app.command("list")
def list_all() -> None:
    """Print every resource, category and priority with its description."""
    from services.ticketer.reference_data import list_reference_data

    with _engine().connect() as connection:
        listing = list_reference_data(connection)
    for kind, entries in listing.items():
        typer.echo(f"{kind}:")
        if not entries:
            typer.echo("  (none)")
        for name, description in entries:
            typer.echo(f"  {name}" + (f"  - {description}" if description else ""))
