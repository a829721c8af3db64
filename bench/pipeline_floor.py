"""The least CPU per mail the pipeline's libraries need, beside the bare IMAP FETCH: how
much of the throughput target is left for the services' own work.

    .venv/bin/python bench/pipeline_floor.py [--mailboxes 10] [--mails 20000]

Needs the local stack (``mailintake stack up``) with the topics applied. The mails are
``pipeline_end_to_end``'s, in mailboxes of the run's own. Two measurements:

1. **bare**: every mailbox fetched by the bare imapclient loop, as in
   ``pipeline_end_to_end`` (the denominator of its ratio).
2. **floor**: three stages, one after another in this process, each making only the
   library calls its service cannot do without, for every mail:

   - *fetch*: the bare loop's ``UID FETCH BODY.PEEK[]`` (500 a command); each mail
     framed as a ``mail.raw`` record (the project's codec: fastavro) and sent with
     kafka-python (the fetcher's producer settings) to a topic of the run's own with
     ``mail.raw``'s partitions; flushed, then the chunk flagged ``\\Seen`` (the
     accounts' default after-fetch action).
   - *classify*: kafka-python reads those records back in batches of 500; each is
     decoded, parsed by the stdlib (``BytesFeedParser``, the classifier's policy), its
     ``mail.classified`` record (made beforehand by the real classifier, outside the
     clock) framed and sent with kafka-python; the offsets committed.
   - *ticket*: aiokafka (faust's client) reads those in batches of 500; each is decoded;
     one row per mail goes into PostgreSQL (one ``executemany`` and one transaction a
     batch, on a primary key as the ledger's), one ``ticket.events``-sized record per
     mail is sent and acknowledged, the offsets committed.

   Left out, so the floor is low rather than high: the typed (pydantic) records, faust's
   per-event machinery, every rule, the bundling, the users, customers and tickets.

The CPU of each stage is this process's (all threads) plus what Kafka, PostgreSQL and
Dovecot used meanwhile (``/proc``). Two cores' worth of CPU divided by the floor's cost
per mail is the most any pipeline on these libraries could sustain here; its ratio to
bare is that ceiling's, and the 0.25 target's rate leaves ``cores / (0.25 * bare) -
floor`` CPU seconds per mail for everything the services do beyond these calls.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import random
import sys
import time
import uuid
from email.parser import BytesFeedParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imapclient import SEEN
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from sqlalchemy import text

from bench.classifier_throughput import _no_claim_check
from bench.fetcher_throughput import _imap, bare_fetch, fill_mailbox, realistic_mail
from bench.pipeline_end_to_end import STACK_SERVERS, stack_cpu_seconds
from mailintake.contracts import get_topic
from mailintake.contracts.codec import codec_for
from mailintake.contracts.records import MailRaw, SenderIdentity, TicketOptions
from mailintake.database import engine_for
from mailintake.local_environment import service_environment
from mailintake.runtime.producer_sizes import PRODUCER_BATCH_BYTES
from mailintake.stack import Stack, add_mail_user
from services.classifier.core import Classifier, process
from services.classifier.parsing import DEFAULT_POLICY
from services.classifier.service import raw_decoder
from services.classifier.settings import ClassifierSettings
from tests.database_schemas import migrated_schema
from tests.ticketer.running_ticketer import delete_group_and_topics

BATCH = 500
TARGET_RATIO = 0.25


def _raw_template() -> dict:
    mail = MailRaw(
        account_id="floor", account_name="Floor", protocol="IMAP", source_id="imap:1:0", poll_cycle=1,
        poll_interval_seconds=5, fetched_at=dt.datetime.now(dt.UTC), size=0, raw=b"",
        sender_identity=SenderIdentity(name="Support", address="support@helpdesk.example.org"),
        ticket_options=TicketOptions(),
    )
    return mail.model_dump()


def _raw_value(codec, template: dict, box: int, source_id: str, raw: bytes) -> bytes:
    """The ``mail.raw`` value of mail ``raw`` of mailbox ``box``."""
    return codec.encode_valid(dict(template, account_id=f"floor-{box}", source_id=source_id, size=len(raw), raw=raw))


def _producer(bootstrap: str) -> KafkaProducer:
    """A kafka-python producer with the fetcher's and the stream processor's settings."""
    return KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, batch_size=PRODUCER_BATCH_BYTES,
        linger_ms=100, max_request_size=8 << 20,
    )


def fetch_stage(endpoints, users, bootstrap: str, topic: str, total: int) -> None:
    codec, template = codec_for("mail.raw"), _raw_template()
    producer = _producer(bootstrap)
    sent = 0
    for box, user in enumerate(users):
        client = _imap(endpoints, user.name, user.password)
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        for start in range(0, len(uids), BATCH):
            chunk, futures = uids[start : start + BATCH], []
            for uid, data in client.fetch(chunk, ["BODY.PEEK[]"]).items():
                raw = data[b"BODY[]"]
                source_id = f"imap:{box}:{uid}"
                value = _raw_value(codec, template, box, source_id, raw)
                futures.append(producer.send(topic, key=source_id.encode(), value=value))
            producer.flush()
            sent += sum(1 for future in futures if future.get(timeout=30))
            client.add_flags(chunk, [SEEN])  # the accounts' default after-fetch action, once acknowledged
        client.logout()
    producer.close()
    if sent != total:
        raise SystemExit(f"the fetch stage had {sent} of {total} mails acknowledged")


def classify_stage(bootstrap: str, source: str, target: str, outputs: dict[bytes, bytes], total: int, group: str) -> None:
    codec = codec_for("mail.raw")
    consumer = KafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
        max_poll_records=BATCH, isolation_level="read_committed",
    )
    producer = _producer(bootstrap)
    done = 0
    while done < total:
        futures = []
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                datum = codec.decode(record.value)
                parser = BytesFeedParser(policy=DEFAULT_POLICY)
                parser.feed(datum["raw"])
                parser.close()
                futures.append(producer.send(target, key=record.key, value=outputs[record.key]))
        producer.flush()
        done += sum(1 for future in futures if future.get(timeout=30))
        consumer.commit()
    consumer.close()
    producer.close()


async def ticket_stage(bootstrap: str, source: str, events_topic: str, database_url: str, total: int, group: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    codec, event = codec_for("mail.classified"), os.urandom(180)
    engine = engine_for(database_url)
    insert = text("INSERT INTO floor_ledger (account_id, source_id, ticket) VALUES (:a, :s, :t) ON CONFLICT DO NOTHING")
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await consumer.start()
    await producer.start()
    done = 0
    try:
        while done < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
            rows = []
            for records in batch.values():
                for record in records:
                    datum = codec.decode(record.value)
                    rows.append({"a": datum["account_id"], "s": datum["source_id"], "t": done + len(rows)})
            if not rows:
                continue
            with engine.begin() as connection:
                connection.execute(insert, rows)
            sends = [await producer.send(events_topic, key=row["s"].encode(), value=event) for row in rows]
            await asyncio.gather(*sends)
            await consumer.commit()
            done += len(rows)
    finally:
        await consumer.stop()
        await producer.stop()
        engine.dispose()


def measured(stack: Stack, work) -> dict[str, float]:
    """CPU seconds of ``work()``: this process's and each stack server's."""
    stack_before, own_before = stack_cpu_seconds(stack), time.process_time()
    work()
    own = time.process_time() - own_before
    return {"own": own} | {name: seconds - stack_before[name] for name, seconds in stack_cpu_seconds(stack).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=10)
    parser.add_argument("--mails", type=int, default=20000)
    args = parser.parse_args()

    stack = Stack()
    endpoints = stack.endpoints
    os.environ.update(service_environment(endpoints))
    bootstrap = endpoints.kafka_bootstrap
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)
    per_mailbox = args.mails // args.mailboxes
    total = per_mailbox * args.mailboxes
    users = [add_mail_user(f"floor{run}{i}", f"pw-{run}-{i}") for i in range(args.mailboxes)]
    mails = [[realistic_mail(rng, box * per_mailbox + n) for n in range(per_mailbox)] for box in range(args.mailboxes)]
    for user, box_mails in zip(users, mails):
        fill_mailbox(endpoints, user.name, user.password, box_mails)

    # What the classifier writes for each mail, made outside the clock: the classify
    # stage only frames and sends it.
    classifier, decode_raw = Classifier.from_settings(ClassifierSettings()), raw_decoder()
    codec, template, outputs = codec_for("mail.raw"), _raw_template(), {}
    for box, box_mails in enumerate(mails):
        for uid, raw in enumerate(box_mails, 1):
            source_id = f"imap:{box}:{uid}"
            value = _raw_value(codec, template, box, source_id, raw)
            outputs[source_id.encode()] = process(decode_raw(value), classifier, _no_claim_check)[1]

    topics = {name: f"floor-{run}-{name}" for name in ("mail.raw", "mail.classified", "ticket.events")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topics[name], get_topic(name).partitions, 1) for name in topics])
    cores = len(os.sched_getaffinity(0))
    try:
        with migrated_schema(endpoints.database_url, "floor_bench") as database_url:
            with engine_for(database_url).begin() as connection:
                connection.execute(text(
                    "CREATE TABLE floor_ledger (account_id text, source_id text, ticket bigint, "
                    "processed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (account_id, source_id))"
                ))
            started = time.monotonic()
            for user in users:
                bare_fetch(endpoints, user.name, user.password, BATCH)
            bare = total / (time.monotonic() - started)
            stages = {
                "fetch": measured(stack, lambda: fetch_stage(endpoints, users, bootstrap, topics["mail.raw"], total)),
                "classify": measured(stack, lambda: classify_stage(
                    bootstrap, topics["mail.raw"], topics["mail.classified"], outputs, total, f"floor-{run}-classify"
                )),
                "ticket": measured(stack, lambda: asyncio.run(ticket_stage(
                    bootstrap, topics["mail.classified"], topics["ticket.events"], database_url, total, f"floor-{run}-ticket"
                ))),
            }
    finally:
        admin.delete_topics(list(topics.values()))
        admin.close()
        for stage in ("classify", "ticket"):
            delete_group_and_topics(bootstrap, f"floor-{run}-{stage}")

    per_mail = {stage: sum(cpu.values()) / total for stage, cpu in stages.items()}
    floor = sum(per_mail.values())
    own = sum(cpu["own"] for cpu in stages.values()) / total
    print(f"mailboxes {args.mailboxes}, mails {total}, cores {cores}, load average {os.getloadavg()[0]:.1f}")
    print("| stage | libraries' CPU s / 1,000 mails | stack's (" + " + ".join(STACK_SERVERS) + ") | together |")
    print("|---|---|---|---|")
    for stage, cpu in stages.items():
        stack_part = [cpu[name] / total * 1000 for name in STACK_SERVERS]
        print(
            f"| {stage} | {cpu['own'] / total * 1000:.2f} | {sum(stack_part):.2f} "
            f"({' + '.join(f'{s:.2f}' for s in stack_part)}) | {per_mail[stage] * 1000:.2f} |"
        )
    print(f"| all | {own * 1000:.2f} | {(floor - own) * 1000:.2f} | {floor * 1000:.2f} |")
    print()
    ceiling = cores / floor
    budget = cores / (TARGET_RATIO * bare) - floor
    print("| measurement | value |")
    print("|---|---|")
    print(f"| bare IMAP FETCH (mails/s) | {bare:,.0f} |")
    print(f"| most the floor allows on {cores} cores (mails/s) | {ceiling:,.0f} |")
    print(f"| that ceiling's ratio to bare | {ceiling / bare:.2f} |")
    print(f"| CPU s / 1,000 mails the {TARGET_RATIO} target allows in all | {cores / (TARGET_RATIO * bare) * 1000:.2f} |")
    print(f"| of that, left for the services' own work beyond the floor | {budget * 1000:.2f} |")


if __name__ == "__main__":
    main()
