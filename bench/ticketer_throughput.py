"""Ticketer throughput on the local stack, next to a bare batched INSERT of the same rows.

    .venv/bin/python bench/ticketer_throughput.py [--mails 20000] [--replicas 1[,2...]] [--rounds 1]
                                                  [--collector tuned|default] [--worker-log-level WARNING|INFO]

Three kinds of measurement in one run, on the same PostgreSQL, in a schema of the run's
own (dropped at the end; until 2026-11-30 the runs wrote to the stack's ``public`` schema
and left their rows there, so each run met larger tables than the one before):

1. **bare INSERT**: the rows the ticketer writes for a new ticket (ticket, first step,
   ledger row with its events), inserted in batches of ``max_batch`` rows per table and
   transaction, with nothing read or decided: the ceiling for this database. It runs in
   as many client processes at once as the ticketer measurement beside it has replicas
   (each replica writes through a connection of its own; two clients insert about a
   third more per second than one here);
2. **new tickets**: ``--mails`` ``mail.classified`` records, each opening a ticket, through
   the ticketer (worker processes of one consumer group, Kafka, PostgreSQL,
   ticket.events), once per round for each count in ``--replicas``;
3. **50 % bundled**: the same number of records where every second one joins the ticket
   of the one before (same sender, subject and poll cycle), once per replica count.

Every new-ticket measurement sits between two bare INSERTs with as many clients, run
just before and just after it, and its ratio uses their mean, since the machine's load
moves during a run. With several rounds and replica counts the counts take turns in each
round, and the median ratio per replica count is reported with its range. The records go
to a topic of this measurement (the shared ``mail.classified`` has other consumers on a
dev stack), produced once the workers' consumer group is stable with all its replicas;
the clock runs from the first handled mail to the last, so start-up, the consumer-group
join and its rebalances are not counted. The owner of every ticket is an existing
fallback user, so no user is created. Every process runs with the garbage-collector
settings of ``mailintake run`` (``--collector default``: CPython's), the bare INSERT's
included; the workers' CPU time (user + system) is reported per new ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import multiprocessing.synchronize
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from bench.pipeline_end_to_end import cpu_seconds  # noqa: E402
from mailintake.contracts import get_topic, record_key  # noqa: E402
from mailintake.contracts.records import Decision, MailClassified, SenderIdentity, TicketOptions, encode_record  # noqa: E402
from mailintake.database import engine_for  # noqa: E402
from mailintake.runtime.garbage_collection import tune_for_streaming  # noqa: E402
from mailintake.runtime.http_endpoint import Health  # noqa: E402
from mailintake.stack import Stack  # noqa: E402
from services.classifier.core import bundle_key  # noqa: E402
from services.ticketer.core import format_reference  # noqa: E402
from services.ticketer.service import GIL_SWITCH_INTERVAL_SECONDS, TicketerWorker  # noqa: E402
from services.ticketer.settings import TicketerSettings  # noqa: E402
from services.ticketer.tables import TICKET_NUMBER_SEQUENCE, ProcessedMail, Ticket, TicketStep, User  # noqa: E402
from tests.database_schemas import migrated_schema  # noqa: E402


POLL_SECONDS = 0.1
STALL_SECONDS = 120.0


def mails(run: str, count: int, bundled: bool) -> list[MailClassified]:
    account = f"bench-{run}-{'bundled' if bundled else 'new'}"
    options = TicketOptions(fallback_user=f"bench-{run}", category="Hardware", priority="normal", resource="1st-level")
    result = []
    for i in range(count):
        key = i // 2 if bundled else i
        sender, subject = f"sender{key}@bench.test", f"Printer {key} jammed"
        result.append(
            MailClassified(
                account_id=account,
                source_id=f"imap:1:{i}",
                message_id=f"<{i}.{account}@bench.test>",
                poll_cycle=1,
                fetched_at=datetime.now(UTC),
                decision=Decision.NEW_TICKET,
                rules_fired=["new-ticket"],
                sender=sender,
                subject=subject,
                bundle_key=bundle_key(account, sender, subject),
                body_text="Hello,\n\nthe printer next to room 3.14 shows 'paper jam' again.\n\nThanks\n" * 3,
                raw_sha256="0" * 64,
                sender_identity=SenderIdentity(name="Desk", address="desk@bench.test"),
                ticket_options=options,
            )
        )
    return result


def bare_insert(engine, batch: list[MailClassified], fallback_user_id: int) -> None:
    """One transaction: the ticket, step and ledger rows of ``batch``, one batched INSERT per table."""
    with engine.begin() as connection:
        numbers = sorted(
            connection.scalars(select(TICKET_NUMBER_SEQUENCE.next_value()).select_from(func.generate_series(1, len(batch))))
        )
        now = datetime.now(UTC)
        tickets, steps, ledger = [], [], []
        for number, mail in zip(numbers, batch):
            options = mail.ticket_options
            tickets.append(
                dict(number=number, reference=format_reference("mi", number), subject=mail.subject, requester=mail.sender,
                     source_account_id=mail.account_id, category=options.category, priority=options.priority,
                     resource=options.resource, bundle_key=mail.bundle_key, opening_poll_cycle=mail.poll_cycle,
                     requester_user_id=fallback_user_id)
            )
            steps.append(
                dict(ticket_number=number, position=1, direction="inbound", account_id=mail.account_id, source_id=mail.source_id,
                     message_id=mail.message_id, sender=mail.sender, subject=mail.subject, body_text=mail.body_text)
            )
            event = {"event_id": f"{mail.account_id}:{mail.source_id}:TICKET_CREATED", "kind": "TICKET_CREATED",
                     "occurred_at": now.isoformat(), "account_id": mail.account_id, "source_id": mail.source_id,
                     "ticket_number": number, "subject": mail.subject, "reason": None}
            ledger.append(
                dict(account_id=mail.account_id, source_id=mail.source_id, message_id=mail.message_id, outcome="TICKET_CREATED",
                     ticket_number=number, subject=mail.subject, events=[event], raw_sha256=mail.raw_sha256,
                     poll_cycle=mail.poll_cycle, bundle_key=mail.bundle_key)
            )
        connection.execute(insert(Ticket), tickets)
        connection.execute(insert(TicketStep), steps)
        connection.execute(insert(ProcessedMail), ledger)


def bare_insert_client(
    database_url: str, account_tag: str, count: int, batch: int, fallback_user_id: int, collector: str,
    start: multiprocessing.synchronize.Barrier, seconds: multiprocessing.Queue,
) -> None:
    """One client of :func:`bare_insert_rate`: ``count`` new tickets in batches, timed
    from the moment all clients pass ``start``."""
    if collector == "tuned":
        tune_for_streaming()
    engine = engine_for(database_url)
    records = mails(account_tag, count, bundled=False)
    start.wait(120)
    started = time.monotonic()
    for first in range(0, count, batch):
        bare_insert(engine, records[first : first + batch], fallback_user_id)
    seconds.put(time.monotonic() - started)


def bare_insert_rate(
    database_url: str, run: str, count: int, batch: int, clients: int, fallback_user_id: int, collector: str
) -> float:
    """Tickets per second of :func:`bare_insert` from ``clients`` processes at once, each
    with its share of ``count``: the limit for as many ticketer replicas, each of which
    writes through a connection of its own."""
    spawn = multiprocessing.get_context("spawn")
    start, seconds = spawn.Barrier(clients), spawn.Queue()
    processes = [
        spawn.Process(
            target=bare_insert_client,
            args=(database_url, f"{run}c{client}", count // clients, batch, fallback_user_id, collector, start, seconds),
        )
        for client in range(clients)
    ]
    for process in processes:
        process.start()
    slowest = max(seconds.get(timeout=STALL_SECONDS) for _ in processes)
    for process in processes:
        process.join(60)
    return count // clients * clients / slowest


def handled(engine, account_id: str) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(ProcessedMail).where(ProcessedMail.account_id == account_id))


def wait_until_handled(engine, account_id: str, count: int) -> None:
    """Return once ``count`` mails of ``account_id`` are in the ledger; fail if none were
    added for STALL_SECONDS.

    The count is asked every POLL_SECONDS: each ask costs PostgreSQL a few milliseconds
    of CPU, which at 10 ms took 40 % of a core from the run being measured. The clock can
    stop up to one interval late, which counts against the ticketer."""
    last, last_change = -1, time.monotonic()
    while (now := handled(engine, account_id)) < count:
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > STALL_SECONDS:
            raise SystemExit(f"stalled: {now} of {count} mails of {account_id} handled, none for {STALL_SECONDS:.0f} s")
        time.sleep(POLL_SECONDS)


def run_replica(
    bootstrap: str,
    database_url: str,
    group: str,
    topic: str,
    start: multiprocessing.synchronize.Barrier,
    stop: multiprocessing.synchronize.Event,
    collector: str,
    log_level: str,
) -> None:
    """One ticketer replica (a process of its own, as in production) until ``stop`` is set.

    The replicas pass ``start`` together, after their imports, so that they join the
    consumer group at about the same time rather than one handling mails alone for the
    seconds another still spends importing."""
    from mailintake.runtime.logs import configure_logging

    configure_logging("bench", log_level)
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)  # as `mailintake run ticketer` does
    if collector == "tuned":
        tune_for_streaming()  # as `mailintake run` does
    settings = TicketerSettings(
        kafka_bootstrap_servers=bootstrap, database_url=database_url, group_id=group, log_level=log_level
    )
    stopping = threading.Event()
    threading.Thread(target=lambda: (stop.wait(), stopping.set()), daemon=True).start()
    start.wait(120)
    asyncio.run(TicketerWorker(settings, Health(), source_topic=topic).run_until(stopping))


def group_is_whole(admin: KafkaAdminClient, group: str, members: int) -> bool:
    """Whether consumer group ``group`` is stable with ``members`` members: its rebalances are over."""
    described = admin.describe_groups([group]).get(group) or {}
    return described.get("group_state") == "Stable" and len(described.get("members") or []) == members


def through_ticketer(
    endpoints, database_url: str, records: list[MailClassified], run: str, label: str, replicas: int, collector: str,
    log_level: str,
) -> tuple[float, float]:
    """Seconds from the first to the last of ``records`` handled by ``replicas`` ticketer
    processes, and the CPU seconds (user + system) the processes used meanwhile.

    The records are produced once the consumer group is stable with all its replicas:
    produced before, the replica that joins first handles mails alone until the others
    join and the group rebalances (a heartbeat interval later), which is neither the
    rate of one replica nor of all. The producer then shares the machine with the
    workers for the first second or so, which counts against them."""
    topic = f"bench.mail.classified.{run}.{label}"
    group = f"bench-{run}-{label}"
    admin = KafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    admin.create_topics([NewTopic(topic, get_topic("mail.classified").partitions, 1)])
    encoded = [(record_key(mail), encode_record("mail.classified", mail)) for mail in records]

    engine = engine_for(database_url)
    account = records[0].account_id
    spawn = multiprocessing.get_context("spawn")
    start, stop = spawn.Barrier(replicas), spawn.Event()
    processes = [
        spawn.Process(target=run_replica, args=(endpoints.kafka_bootstrap, database_url, group, topic, start, stop, collector, log_level))
        for _ in range(replicas)
    ]
    for process in processes:
        process.start()
    producer = KafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024)
    try:
        deadline = time.monotonic() + STALL_SECONDS
        while not group_is_whole(admin, group, replicas):
            if time.monotonic() > deadline or not all(p.is_alive() for p in processes):
                raise SystemExit(f"consumer group {group} never became stable with {replicas} members")
            time.sleep(0.05)
        cpu_started = sum(cpu_seconds(p.pid) for p in processes)
        for key, value in encoded:
            producer.send(topic, key=key, value=value)
        producer.flush()
        wait_until_handled(engine, account, len(records))
        finished = time.time()
        return finished - first_handled_at(engine, account), sum(cpu_seconds(p.pid) for p in processes) - cpu_started
    finally:
        producer.close()
        stop.set()
        for process in processes:
            process.join(60)
        # The run's topic and what faust created for the run's group (changelog, assignor).
        admin.delete_topics([t for t in admin.list_topics() if t == topic or t.startswith(f"{group}-")])
        admin.close()


def first_handled_at(engine, account_id: str) -> float:
    """When the first mail of ``account_id`` was handled (epoch seconds): the start of the
    transaction that wrote its ledger row, a little before its commit."""
    with engine.connect() as connection:
        return connection.scalar(
            select(func.min(ProcessedMail.processed_at)).where(ProcessedMail.account_id == account_id)
        ).timestamp()


def replica_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--replicas wants counts of 1 or more, comma-separated, not {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=20000, help="records per measurement")
    parser.add_argument(
        "--replicas",
        type=replica_counts,
        default=[1],
        help="ticketer processes in one consumer group; several counts (1,2) are measured in turn, each round",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of (bare INSERT, ticketer) per replica count")
    parser.add_argument(
        "--worker-log-level",
        choices=["WARNING", "INFO"],
        default="WARNING",
        help="the workers' log level; at INFO (the services' default) they write a JSON line per mail to stderr",
    )
    parser.add_argument(
        "--collector",
        choices=["tuned", "default"],
        default="tuned",
        help="garbage-collector settings of every process: as `mailintake run` sets them, or CPython's defaults",
    )
    args = parser.parse_args()
    endpoints = Stack().up()
    with migrated_schema(endpoints.database_url, "ticketer_bench") as database_url:
        measure(endpoints, database_url, args)


def measure(endpoints, database_url: str, args: argparse.Namespace) -> None:
    """The bench's measurements, on the PostgreSQL schema at ``database_url``."""
    settings = TicketerSettings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap, database_url=database_url, log_level="WARNING"
    )
    from mailintake.runtime.logs import configure_logging

    configure_logging("bench", "WARNING")
    # describe_groups cannot decode the metadata of faust's own assignor and warns about it
    # at every look; the group state and members it needs are decoded all the same.
    logging.getLogger("kafka.admin").setLevel(logging.ERROR)
    engine = engine_for(database_url)
    run = uuid.uuid4().hex[:8]
    with engine.begin() as connection:
        fallback_id = connection.scalar(insert(User).values(login=f"bench-{run}", email=f"bench-{run}@bench.test").returning(User.id))

    bare_runs = 0

    def bare_rate(clients: int) -> float:
        nonlocal bare_runs
        bare_runs += 1
        return bare_insert_rate(
            database_url, f"{run}b{bare_runs}", args.mails, settings.max_batch, clients, fallback_id, args.collector
        )

    print(f"mails per measurement: {args.mails}, batch: {settings.max_batch}, ticketer replicas: {args.replicas}")
    print(f"{'round':>5} {'replicas':>8} {'bare INSERT/s':>13} {'tickets/s':>9} {'ratio':>6} {'worker CPU us/ticket':>20}")
    # Each ticketer measurement sits between two bare INSERTs with as many clients as it
    # has replicas and is divided by their mean, since the machine's load moves.
    results: dict[int, list[tuple[float, float, float]]] = {count: [] for count in args.replicas}
    for round_number in range(1, args.rounds + 1):
        for count in args.replicas:
            label = f"new{round_number}x{count}"
            bare_before = bare_rate(count)
            seconds, cpu = through_ticketer(
                endpoints, database_url, mails(f"{run}{label}", args.mails, bundled=False), run, label, count,
                args.collector, args.worker_log_level,
            )
            bare_after = bare_rate(count)
            bare, rate = (bare_before + bare_after) / 2, args.mails / seconds
            results[count].append((rate / bare, rate, cpu / args.mails * 1e6))
            print(f"{round_number:>5} {count:>8} {bare:>13.0f} {rate:>9.0f} {rate / bare:>6.2f} {cpu / args.mails * 1e6:>20.0f}")
    summary = {}
    for count in args.replicas:
        seconds, _ = through_ticketer(
            endpoints, database_url, mails(f"{run}bundled{count}", args.mails, bundled=True), run, f"bundled{count}", count,
            args.collector, args.worker_log_level,
        )
        bundled_rate = args.mails / seconds
        ratios = sorted(r for r, _, _ in results[count])
        summary[count] = {
            "ratio_median": round(statistics.median(ratios), 3),
            "ratio_range": [round(ratios[0], 3), round(ratios[-1], 3)],
            "new_tickets_per_s_median": round(statistics.median(r for _, r, _ in results[count])),
            "worker_cpu_us_per_ticket_median": round(statistics.median(c for _, _, c in results[count])),
            "bundled_mails_per_s": round(bundled_rate),
        }
        print(
            f"replicas {count}: ratio to bare INSERT median {summary[count]['ratio_median']:.2f} "
            f"({ratios[0]:.2f}-{ratios[-1]:.2f} over {len(ratios)} rounds); 50% bundled: "
            f"{bundled_rate:.0f} mails/s, {bundled_rate / 2:.0f} tickets/s + {bundled_rate / 2:.0f} steps/s"
        )
    print(json.dumps({str(count): values for count, values in summary.items()}))


if __name__ == "__main__":
    main()
