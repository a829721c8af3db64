"""``mailintake topics``: the Kafka topics of the pipeline, as the contracts declare them."""

from __future__ import annotations

from typing import Annotated

import typer
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from mailintake.contracts.topic_admin import ChangeKind, TopicChangeFailed, sync_topics
from mailintake.contracts.topics import load_topics

BOOTSTRAP_ENV = "MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS"
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"

topics_app = typer.Typer(help="Kafka topics of the pipeline, as declared in schemas/*.yaml.", no_args_is_help=True)

_DONE = {
    ChangeKind.CREATE: "created",
    ChangeKind.ADD_PARTITIONS: "added partitions to",
    ChangeKind.SET_CONFIG: "changed config of",
    ChangeKind.UNCHANGED: "unchanged:",
    ChangeKind.CANNOT_SHRINK: "cannot shrink",
}
_PLANNED = {
    ChangeKind.CREATE: "would create",
    ChangeKind.ADD_PARTITIONS: "would add partitions to",
    ChangeKind.SET_CONFIG: "would change config of",
    ChangeKind.UNCHANGED: "unchanged:",
    ChangeKind.CANNOT_SHRINK: "cannot shrink",
}


@topics_app.command("apply")
def apply_topics(
    bootstrap: Annotated[
        str, typer.Option("--bootstrap", envvar=BOOTSTRAP_ENV, help="Kafka bootstrap servers, host:port[,...].")
    ] = DEFAULT_BOOTSTRAP,
    replication_factor: Annotated[
        int, typer.Option(min=1, help="Replication factor for topics created; existing topics keep theirs.")
    ] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change, change nothing.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the broker to answer.")] = 30,
) -> None:
    """Create the topics, or raise their partitions and set their configs to match the contracts."""
    topics = list(load_topics().values())
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="mailintake-topics",
            bootstrap_timeout_ms=int(timeout * 1000),
            request_timeout_ms=int(timeout * 1000),
        )
    except KafkaError as error:
        typer.echo(f"no Kafka broker answers at {bootstrap}: {error}", err=True)
        raise typer.Exit(2) from None
    try:
        changes = sync_topics(admin, topics, replication_factor, dry_run=dry_run)
    except (KafkaError, TopicChangeFailed, ValueError) as error:
        typer.echo(f"Kafka refused: {error}", err=True)
        raise typer.Exit(2) from None
    finally:
        admin.close()
    verbs = _PLANNED if dry_run else _DONE
    for change in changes:
        line = f"{verbs[change.kind]} {change.topic}" + (f" ({change.detail})" if change.detail else "")
        typer.echo(line, err=change.kind is ChangeKind.CANNOT_SHRINK)
    if any(c.kind is ChangeKind.CANNOT_SHRINK for c in changes):
        raise typer.Exit(1)


@topics_app.command("list")
def list_topics() -> None:
    """Show each topic's contract: partitions, configs, compatibility, key, producers and consumers."""
    for topic in load_topics().values():
        settings = " ".join(f"{k}={v}" for k, v in topic.kafka_config().items())
        typer.echo(f"{topic.name}: {topic.partitions} partitions, {settings}, {topic.compatibility}")
        typer.echo(f"  schema: {topic.schema_file} (subject {topic.subject})")
        typer.echo(f"  key: {topic.key.format}")
        typer.echo(f"  {', '.join(topic.producers)} -> {', '.join(topic.consumers)}")
