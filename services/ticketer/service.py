"""The ticketer's Kafka edge: mail.classified -> PostgreSQL -> ticket.events."""

from __future__ import annotations

import threading

import structlog
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import Counter

from mailintake.contracts.records import MailClassified, decode_record, encode_record
from mailintake.database import engine_for
from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.stream_processor import DlqLimit, Output, StreamProcessor
from services.ticketer.core import events_for
from services.ticketer.settings import TicketerSettings
from services.ticketer.store import TicketStore

SOURCE_TOPIC = "mail.classified"
OUTPUT_TOPIC = "ticket.events"

OUTCOMES = Counter("mailintake_ticketer_outcomes_total", "Mails handled by outcome", ["outcome", "replay"])

log = structlog.get_logger(__name__)


def build_processor(settings: TicketerSettings, health: Health) -> StreamProcessor[MailClassified]:
    store = TicketStore(engine_for(settings.database_url.get_secret_value()), settings)

    def process(decision: MailClassified, _message: ConsumerRecord) -> list[Output]:
        outcome, written = store.apply(decision)
        OUTCOMES.labels(outcome.kind.value, str(not written).lower()).inc()
        log.info(
            "mail.handled",
            account_id=decision.account_id,
            message_id=decision.message_id,
            outcome=outcome.kind.value,
            ticket_number=outcome.ticket_number,
            replay=not written,
        )
        key = str(outcome.ticket_number if outcome.ticket_number is not None else decision.account_id).encode()
        return [
            Output(OUTPUT_TOPIC, key, encode_record(OUTPUT_TOPIC, event))
            for event in events_for(decision.account_id, decision.source_id, outcome)
        ]

    return StreamProcessor(
        service="ticketer",
        source_topic=SOURCE_TOPIC,
        group_id=settings.group_id,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        decode=lambda data: decode_record(SOURCE_TOPIC, data),
        process=process,
        health=health,
        dlq_limit=DlqLimit(max_ratio=settings.max_dlq_ratio),
    )


def run(settings: TicketerSettings, health: Health, stop: threading.Event) -> None:
    build_processor(settings, health).run(stop)


class SchemaNotCurrent(RuntimeError):
    """The database is not at the migration head; the ticketer would write to the wrong schema."""


def check_schema(settings: TicketerSettings) -> None:
    """Refuse to start on a database that `mailintake db upgrade` has not brought up to date."""
    from alembic.script import ScriptDirectory

    from mailintake.database.migrate import alembic_config, current_revision

    url = settings.database_url.get_secret_value()
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    current = current_revision(url)
    if current != head:
        raise SchemaNotCurrent(f"database schema is at revision {current}, not {head}: run `mailintake db upgrade`")
