"""The classifier's Kafka edge: mail.raw -> classify -> mail.classified."""

from __future__ import annotations

import re
import threading

from kafka.consumer.fetcher import ConsumerRecord

from mailintake.claim_check import ClaimCheckStore
from mailintake.contracts.records import MailRaw, decode_record, encode_record
from mailintake.database import engine_for
from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.stream_processor import DlqLimit, Output, StreamProcessor
from services.classifier.core import classify, output_key
from services.classifier.rules import RuleContext
from services.classifier.settings import ClassifierSettings

SOURCE_TOPIC = "mail.raw"
OUTPUT_TOPIC = "mail.classified"


def build_processor(settings: ClassifierSettings, health: Health) -> StreamProcessor[MailRaw]:
    reference_pattern = re.compile(settings.reference_pattern)
    store = ClaimCheckStore(engine_for(settings.database_url.get_secret_value()))

    def process(mail: MailRaw, _message: ConsumerRecord) -> list[Output]:
        raw = mail.raw if mail.raw is not None else store.get(mail.claim_check)
        context = RuleContext(mail.ticket_options, settings.instance_id, reference_pattern)
        decision = classify(mail, raw, context)
        return [Output(OUTPUT_TOPIC, output_key(decision).encode(), encode_record(OUTPUT_TOPIC, decision))]

    return StreamProcessor(
        service="classifier",
        source_topic=SOURCE_TOPIC,
        group_id=settings.group_id,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        decode=lambda data: decode_record(SOURCE_TOPIC, data),
        process=process,
        health=health,
        dlq_limit=DlqLimit(max_ratio=settings.max_dlq_ratio),
    )


def run(settings: ClassifierSettings, health: Health, stop: threading.Event) -> None:
    build_processor(settings, health).run(stop)
