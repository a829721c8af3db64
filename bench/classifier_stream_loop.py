"""The classifier's stream loop taken apart: what Kafka's reading and writing cost per
record beside the classifier's own work, and what that work costs inside the loop
against the same work alone.

    .venv/bin/python bench/classifier_stream_loop.py [--mails 10000] [--rounds 3]

Needs the local stack (``mailintake stack up``). The records are ``mail.raw`` values of
``pipeline_end_to_end``'s mails, written once to a topic of the run's own with
``mail.raw``'s partitions. Each measurement runs the service's own ``StreamProcessor``
(its Kafka clients, the classifier's settings, its decoder and handler) on a fresh
consumer group over those records, with the process's CPU (all threads) counted from the
500th record to the last. The processor ran on kafka-python (with a sender and a network
thread) until 2026-12-02, on aiokafka since; BENCHMARKS.md has both. What differs is the
handler:

- *read*: the handler returns nothing: consuming, the ``mail.raw`` decode, the commits;
- *read + write*: the handler returns the record's real ``mail.classified`` output, made
  beforehand outside the clock: producing it costs what the service's produce costs;
- *read + classify*: the classifier's handler runs, its output is dropped;
- *service*: the classifier's handler runs and its output is produced: the service.

Beside them, *alone*: the same decode and handler calls in a plain loop over the records
in memory, no Kafka. Outputs go to a second topic of the run's own. The machine is
noisy, so the five alternate within each round and the medians are reported; the
differences between them are the parts.

The classifier's handler here is ``record_handler``, one record at a time, as the
service ran when this bench was written. The service now hands its batches to
``grouped_handler``; ``bench/classifier_grouped_pass.py`` compares the two.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402
from kafka.consumer.fetcher import ConsumerRecord  # noqa: E402

from bench.classifier_throughput import _no_claim_check, raw_record  # noqa: E402
from bench.fetcher_throughput import realistic_mail  # noqa: E402
from mailintake.contracts import get_topic  # noqa: E402
from mailintake.contracts.records import MailRaw  # noqa: E402
from mailintake.local_environment import service_environment  # noqa: E402
from mailintake.runtime.garbage_collection import tune_for_streaming  # noqa: E402
from mailintake.runtime.http_endpoint import Health  # noqa: E402
from mailintake.runtime.producer_sizes import PRODUCER_BATCH_BYTES  # noqa: E402
from mailintake.runtime.stream_processor import Output, StreamProcessor  # noqa: E402
from mailintake.stack import Stack  # noqa: E402
from services.classifier.core import Classifier  # noqa: E402
from services.classifier.service import raw_decoder, record_handler  # noqa: E402
from services.classifier.settings import ClassifierSettings  # noqa: E402

WARM_UP_RECORDS = 500
Handler = Callable[[MailRaw, ConsumerRecord], Sequence[Output]]


def fill(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", batch_size=PRODUCER_BATCH_BYTES, linger_ms=50)
    futures = [producer.send(topic, key=f"imap:1:{n}".encode(), value=value) for n, value in enumerate(values)]
    producer.flush()
    for future in futures:
        future.get(timeout=30)
    producer.close()


def loop_cpu(bootstrap: str, topic: str, label: str, handler: Handler, total: int) -> float:
    """CPU seconds per record of the service's stream loop over ``topic`` with ``handler``."""
    # Counted here rather than read from the service's metrics: reading the registry
    # costs ~160 us, which polling would add to the CPU measured.
    handled = 0

    def counting(mail: MailRaw, message: ConsumerRecord) -> Sequence[Output]:
        nonlocal handled
        handled += 1
        return handler(mail, message)

    processor = StreamProcessor(
        service=label,
        source_topic=topic,
        group_id=label,
        bootstrap_servers=bootstrap,
        decode=raw_decoder(),
        process=counting,
        health=Health(),
    )
    stop = threading.Event()
    thread = threading.Thread(target=processor.run, args=(stop,), name=label)
    thread.start()
    try:
        while handled < WARM_UP_RECORDS:
            if not thread.is_alive():
                raise SystemExit(f"{label}: the stream loop ended before its first records")
            time.sleep(0.005)
        first, cpu = handled, time.process_time()
        while handled < total:
            if not thread.is_alive():
                raise SystemExit(f"{label}: the stream loop ended at {handled} of {total} records")
            time.sleep(0.005)
        return (time.process_time() - cpu) / (handled - first)
    finally:
        stop.set()
        thread.join()


def alone_cpu(values: list[bytes], handler: Handler) -> tuple[float, float]:
    """CPU seconds per record of the decode, and of the handler, in plain loops over ``values``."""
    decode = raw_decoder()
    started = time.process_time()
    mails = [decode(value) for value in values]
    decoded = time.process_time()
    for mail in mails:
        handler(mail, None)  # type: ignore[arg-type]  # the classifier's handler never reads the message
    return (decoded - started) / len(values), (time.process_time() - decoded) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.mails <= WARM_UP_RECORDS:
        parser.error(f"--mails must be more than the {WARM_UP_RECORDS} records of the warm-up")

    os.environ.update(service_environment(Stack().endpoints))
    bootstrap = os.environ["MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS"]
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)
    values = [raw_record(realistic_mail(rng, n), n) for n in range(args.mails)]
    classify = record_handler(Classifier.from_settings(ClassifierSettings()), _no_claim_check)
    source, target = f"classifier-loop-{run}-raw", f"classifier-loop-{run}-classified"
    # The real output of every record, keyed by the record's key, for the write-only handler.
    decode = raw_decoder()
    outputs = {f"imap:1:{n}".encode(): classify(decode(value), None)[0] for n, value in enumerate(values)}  # type: ignore[arg-type]

    def read(_mail: MailRaw, _message: ConsumerRecord) -> list[Output]:
        return []

    def read_write(_mail: MailRaw, message: ConsumerRecord) -> list[Output]:
        made = outputs[message.key]
        return [Output(target, made.key, made.value)]

    def read_classify(mail: MailRaw, message: ConsumerRecord) -> list[Output]:
        classify(mail, message)
        return []

    def service(mail: MailRaw, message: ConsumerRecord) -> list[Output]:
        return [Output(target, o.key, o.value) for o in classify(mail, message)]

    handlers: dict[str, Handler] = {
        "read": read, "read + write": read_write, "read + classify": read_classify, "service": service,
    }
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    partitions = get_topic("mail.raw").partitions
    admin.create_topics([NewTopic(source, partitions, 1), NewTopic(target, get_topic("mail.classified").partitions, 1)])
    groups: list[str] = []
    results: dict[str, list[float]] = {name: [] for name in [*handlers, "alone: decode", "alone: classify"]}
    tune_for_streaming()  # as every service process does at start
    try:
        fill(bootstrap, source, values)
        for round_number in range(args.rounds):
            for name, handler in handlers.items():
                label = f"classifier-loop-{run}-{round_number}-{name.replace(' ', '')}"
                groups.append(label)
                results[name].append(loop_cpu(bootstrap, source, label, handler, args.mails))
            decoded, classified = alone_cpu(values, classify)
            results["alone: decode"].append(decoded)
            results["alone: classify"].append(classified)
    finally:
        admin.delete_topics([source, target])
        if groups:
            admin.delete_groups(groups)
        admin.close()

    us = {name: statistics.median(seconds) * 1e6 for name, seconds in results.items()}
    print(
        f"records {args.mails} ({len(values[0]):,}-byte values and alike), {partitions} partitions, "
        f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    print("| loop | CPU us / record (median) | rounds |")
    print("|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {us[name]:,.0f} | {', '.join(f'{s * 1e6:,.0f}' for s in seconds)} |")
    print()
    print("| part | CPU us / record |")
    print("|---|---|")
    print(f"| Kafka client reading, commits (read - alone: decode) | {us['read'] - us['alone: decode']:,.0f} |")
    print(f"| Kafka client writing (read + write - read) | {us['read + write'] - us['read']:,.0f} |")
    print(f"| classify in the loop (read + classify - read) | {us['read + classify'] - us['read']:,.0f} |")
    print(f"| classify alone | {us['alone: classify']:,.0f} |")
    print(f"| service against the sum of its parts (service - read - writing - classify in the loop) | "
          f"{us['service'] - us['read + write'] - us['read + classify'] + us['read']:,.0f} |")


if __name__ == "__main__":
    main()
