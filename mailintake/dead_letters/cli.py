"""``mailintake dlq``: list the dead letters on ``mail.dlq`` and replay them."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from kafka.errors import KafkaError

from mailintake.dead_letters.replay_plan import Replay, Skip, plan_replay
from mailintake.dead_letters.selection import LIST_HEADER, LetterFilter, letter_row, parse_time

BOOTSTRAP_ENV = "MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS"
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"

dlq_app = typer.Typer(help="Dead letters on mail.dlq: list them, replay them.", no_args_is_help=True)

Bootstrap = Annotated[str, typer.Option("--bootstrap", envvar=BOOTSTRAP_ENV, help="Kafka bootstrap servers, host:port[,...].")]
ReasonContains = Annotated[str | None, typer.Option(help="Only letters whose reason contains this (case-insensitive).")]
Service = Annotated[str | None, typer.Option(help="Only letters of this service (classifier, ticketer).")]
SourceTopic = Annotated[str | None, typer.Option(help="Only letters read from this topic.")]
ExceptionType = Annotated[str | None, typer.Option(help="Only letters whose exception type contains this.")]
Since = Annotated[str | None, typer.Option(help="Only letters written since: an ISO date/time (UTC if naive) or a span back (90m, 6h, 2d).")]
Until = Annotated[str | None, typer.Option(help="Only letters written before this (same forms as --since).")]


def _filter(reason_contains, service, source_topic, exception_type, since, until) -> LetterFilter:  # noqa: ANN001
    now = dt.datetime.now(dt.UTC)
    try:
        return LetterFilter(
            reason_contains=reason_contains,
            service=service,
            source_topic=source_topic,
            exception_type_contains=exception_type,
            since=parse_time(since, now) if since else None,
            until=parse_time(until, now) if until else None,
        )
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def _read(bootstrap: str, selection: LetterFilter):  # noqa: ANN202
    from mailintake.dead_letters.kafka_log import read_letters, read_replayed

    try:
        letters = [s for s in read_letters(bootstrap, since=selection.since) if selection.matches(s)]
        return letters, read_replayed(bootstrap)
    except KafkaError as error:
        typer.echo(f"Kafka at {bootstrap} did not answer: {error}", err=True)
        raise typer.Exit(2) from None


@dlq_app.command("list")
def list_letters(
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    reason_contains: ReasonContains = None,
    service: Service = None,
    source_topic: SourceTopic = None,
    exception_type: ExceptionType = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most the newest this many.")] = 100,
) -> None:
    """Show dead letters, oldest first: where in mail.dlq, when, which service, where from, why."""
    selection = _filter(reason_contains, service, source_topic, exception_type, since, until)
    letters, replayed = _read(bootstrap, selection)
    if not letters:
        typer.echo("no dead letters")
        return
    typer.echo(LIST_HEADER)
    for stored in letters[-limit:]:
        typer.echo(letter_row(stored, stored.position in replayed))
    if len(letters) > limit:
        typer.echo(f"({len(letters) - limit} older letters not shown; raise --limit)")


@dlq_app.command("replay")
def replay_letters(
    bootstrap: Bootstrap = DEFAULT_BOOTSTRAP,
    reason_contains: ReasonContains = None,
    service: Service = None,
    source_topic: SourceTopic = None,
    exception_type: ExceptionType = None,
    since: Since = None,
    until: Until = None,
    to_topic: Annotated[
        str | None, typer.Option(help="Topic to replay to; by default each letter's own source topic.")
    ] = None,
    again: Annotated[bool, typer.Option("--again", help="Replay letters the ledger says were replayed already.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be replayed, produce nothing.")] = False,
    everything: Annotated[
        bool, typer.Option("--all", help="Needed to replay without any filter: every letter on mail.dlq.")
    ] = False,
) -> None:
    """Produce selected dead letters again, with their original key and value.

    Each replayed letter is recorded in mail.dlq.replays in the same Kafka transaction,
    and letters recorded there are skipped next time, so running the same replay twice
    produces nothing twice. Fix the cause first: a letter that fails again is
    dead-lettered again, as a new letter.
    """
    if not everything and not any((reason_contains, service, source_topic, exception_type, since, until)):
        typer.echo("name the letters to replay (--reason-contains, --service, --since, ...) or pass --all", err=True)
        raise typer.Exit(2)
    selection = _filter(reason_contains, service, source_topic, exception_type, since, until)
    letters, replayed = _read(bootstrap, selection)
    plan = plan_replay(letters, replayed, to_topic, again)
    replays = [item for item in plan if isinstance(item, Replay)]
    for item in plan:
        where = f"mail.dlq:{item.stored.partition}:{item.stored.offset}"
        if isinstance(item, Skip):
            typer.echo(f"skip   {where}: {item.why}")
        else:
            verb = "would replay" if dry_run else "replay"
            typer.echo(f"{verb} {where} -> {item.to_topic}")
    if dry_run or not replays:
        typer.echo(f"{len(replays)} of {len(plan)} selected letters {'would be ' if dry_run else ''}replayed")
        return
    from mailintake.dead_letters.kafka_log import replay

    try:
        replay(bootstrap, replays)
    except KafkaError as error:
        typer.echo(f"replay aborted, nothing was replayed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{len(replays)} of {len(plan)} selected letters replayed")
