"""The whole pipeline on the local stack: mails in Dovecot mailboxes to committed ticket steps.

    .venv/bin/python bench/pipeline_end_to_end.py [--mailboxes 10] [--mails 4000] [--latency-seconds 60] [--plots DIR]
                                                 [--classifiers 1] [--ticketers 1] [--auto-answers]

Needs the local stack (``mailintake stack up``) with the topics applied. Each run gets
a PostgreSQL schema and consumer groups of its own, so the services poll and consume
only the run's mailboxes and records. Three measurements, in this order:

1. **bare**: every mailbox fetched by a bare imapclient loop (``UID FETCH BODY.PEEK[]``,
   500 per command; ``bench/fetcher_throughput.py: bare_fetch``): what the mail server
   gives, the limit.
2. **sustained**: the mailboxes hold ``--mails`` realistic mails before one fetcher, one
   classifier and one ticketer (by default) start (``mailintake run ...`` processes, as deployed). The
   clock runs from the first mail committed in PostgreSQL (its row in the processed-mail
   ledger) to the last: mails per second, and its ratio to bare. The CPU seconds the
   processes used (``/proc``) give the cost per 1,000 mails, in all and by service;
   beside it, what Kafka, PostgreSQL and Dovecot (with their backends and sessions) used
   from the services' start to the last mail. Those figures take in the services' start
   (imports, joining their groups) and the drain at the end, when the last mailboxes'
   mails pass one stage after another; so the same is also given for the steady state,
   from the commit of the mail at 10 % of them (in commit order) to that at 90 %: mails
   per second and its ratio to bare, and the CPU seconds per 1,000 mails used in that
   stretch (sampled once a second, read off by interpolation).
3. **latency**: with the pipeline running, mails are appended at half the sustained rate
   for ``--latency-seconds`` (the table gives the rate reached), from four clients in
   threads, each appending the mails due at its turn in one command (IMAP MULTIAPPEND;
   one APPEND per mail stayed near 450 a second beside the pipeline on two cores). A
   mail's latency runs from the completion of the command that appended it to its
   ledger row's ``processed_at`` (the start of the ticketer transaction
   that committed it, so slightly early): p50 and p99, against the target of one poll
   interval plus 2 s. Each latency mail's time is then split into stages by the moments
   it passed: its APPEND, the ``fetched_at`` its ``mail.raw`` record carries, the Kafka
   timestamps of its ``mail.raw`` and ``mail.classified`` records, and its ledger row.

``--classifiers`` and ``--ticketers`` run that many replicas of each in one consumer
group (the fetcher stays one process: it owns the mailboxes). ``--auto-answers`` gives the
accounts a sender address and an auto-answer template, and has the ticketer queue the
answers, with its per-recipient cap (3 an hour by default). The sustained phase's 600
senders write many mails each, so every new ticket is checked against the cap and 1,800
answers are queued; each latency mail comes from a sender of its own and is answered. The
sender service, which would deliver them, does not run.

With ``--plots DIR`` (matplotlib, from the ``bench`` extra) it writes the mails committed
over time in phase 2 and the latency distribution of phase 3 as PNG files.
"""

from __future__ import annotations

import argparse
import bisect
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench.fetcher_throughput import bare_fetch, fill_mailbox, realistic_mail  # noqa: E402
from mailintake.contracts import get_topic  # noqa: E402
from mailintake.contracts.records import SenderIdentity, decode_record  # noqa: E402
from mailintake.database import engine_for  # noqa: E402
from mailintake.local_environment import service_environment  # noqa: E402
from mailintake.runtime.settings import load_settings  # noqa: E402
from mailintake.stack import Stack, add_mail_user  # noqa: E402
from services.fetcher.account import Account  # noqa: E402
from services.fetcher.account_store import AccountStore  # noqa: E402
from services.fetcher.password_cipher import cipher_from_settings  # noqa: E402
from services.fetcher.settings import AccountEncryptionSettings  # noqa: E402
from services.ticketer.auto_answer_outbox import import_templates  # noqa: E402
from services.ticketer.auto_answer_templates import TemplateText  # noqa: E402
from services.ticketer.tables import OutboundMail, ProcessedMail  # noqa: E402
from tests.database_schemas import migrated_schema  # noqa: E402
from tests.ticketer.running_ticketer import delete_group_and_topics, free_port, place_group_at_end  # noqa: E402

POLL_INTERVAL_SECONDS = 5
SERVICES = ("fetcher", "classifier", "ticketer")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessTable:
    """Every process's CPU seconds so far and its children, from one read of ``/proc``."""

    times: dict[int, float]
    children: dict[int, list[int]]

    @classmethod
    def read(cls) -> ProcessTable:
        children: dict[int, list[int]] = {}
        times: dict[int, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended while the table was read
            pid = int(entry.name)
            children.setdefault(int(fields[1]), []).append(pid)
            times[pid] = sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
        return cls(times, children)

    def tree_cpu_seconds(self, root: int) -> float:
        """CPU time (user + system) of process ``root`` and its descendants, the ones
        that ended included: a process's reaped children are in its own ``cutime``/``cstime``,
        so each live process of the tree counts its own time and that of its reaped children.
        A process that ends between two readings moves from one term to its parent's."""
        total, pending = 0.0, [root]
        while pending:
            pid = pending.pop()
            total += self.times.get(pid, 0.0)
            pending.extend(self.children.get(pid, ()))
        return total


STACK_SERVERS = ("kafka", "postgres", "dovecot")


def stack_cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds so far of each server of the local stack the pipeline uses (with the
    processes it started: PostgreSQL's backends, Dovecot's IMAP sessions)."""
    table = ProcessTable.read()
    result = {}
    for name in STACK_SERVERS:
        record = stack.component(name).running()
        if record is None:
            raise SystemExit(f"the stack's {name} is not running: `mailintake stack up`")
        result[name] = table.tree_cpu_seconds(record.pid)
    return result


@dataclass
class Pipeline:
    """The services as processes, ``replicas[service]`` of each (one by default), on the
    run's schema and consumer groups; a process is named by its service, or by service and
    number where there are several."""

    env: dict[str, str]
    log_dir: Path
    replicas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVICES, 1))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        for service, count in self.replicas.items():
            for number in range(1, count + 1):
                name = service if count == 1 else f"{service}-{number}"
                log = (self.log_dir / f"{name}.log").open("a")
                self.ports[name] = free_port()
                env = self.env | {f"MAILINTAKE_{service.upper()}_HTTP_PORT": str(self.ports[name])}
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "mailintake", "run", service], env=env, stdout=log, stderr=subprocess.STDOUT
                )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far by service (replicas summed)."""
        used = dict.fromkeys(self.replicas, 0.0)
        for name, process in self.processes.items():
            used[name.split("-")[0]] += cpu_seconds(process.pid)
        return used

    def check_alive(self) -> None:
        for service, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.log_dir / f"{service}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"the {service} exited with {process.returncode}:\n{tail}")

    def stop(self) -> None:
        """Stop the processes, then delete the run's consumer groups and the topics faust
        made for its ticketer group (the window table's changelog, the assignor's): left
        behind, every run added a dozen partitions to the broker for good."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        for service in self.replicas:
            group = self.env.get(f"MAILINTAKE_{service.upper()}_GROUP_ID")
            if group:
                delete_group_and_topics(self.env["MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS"], group)


def committed(engine, account_ids: list[str]) -> int:
    with engine.connect() as connection:
        return connection.scalar(
            select(func.count()).select_from(ProcessedMail).where(ProcessedMail.account_id.in_(account_ids))
        )


def processed_at(engine, account_ids: list[str]) -> dict[str, float]:
    """Message-ID -> when its ledger row was written (seconds since the epoch)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(ProcessedMail.message_id, func.extract("epoch", ProcessedMail.processed_at)).where(
                ProcessedMail.account_id.in_(account_ids)
            )
        ).all()
    return {message_id: float(at) for message_id, at in rows}


@dataclass
class CpuMeter:
    """The services' and the stack's CPU seconds, sampled while the pipeline runs, so the
    cost of a stretch of the run can be read apart from the services' start and the drain
    at its end."""

    pipeline: Pipeline
    stack: Stack
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def sample(self) -> None:
        """Note the CPU seconds so far by service and by server, at the time since the epoch."""
        self.samples.append((time.time(), self.pipeline.cpu_seconds() | stack_cpu_seconds(self.stack)))

    def used_between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds used by each service and server between two moments (seconds since
        the epoch), each read off the samples around it by linear interpolation."""
        before, after = self._at(start), self._at(end)
        return {name: after[name] - before[name] for name in before}

    def _at(self, moment: float) -> dict[str, float]:
        index = bisect.bisect_left([at for at, _ in self.samples], moment)
        if index == 0 or index == len(self.samples):
            raise ValueError(f"no CPU samples on both sides of {moment}")
        (t0, used0), (t1, used1) = self.samples[index - 1], self.samples[index]
        share = (moment - t0) / (t1 - t0)
        return {name: used0[name] + share * (used1[name] - used0[name]) for name in used0}


CPU_SAMPLE_SECONDS = 1.0


def wait_committed(
    engine, account_ids: list[str], total: int, pipeline: Pipeline, timeout: float, meter: CpuMeter | None = None
) -> list[tuple[float, int]]:
    """Samples (seconds, mails committed) until ``total`` are committed; ``meter``, if
    given, samples the CPU once a second, and once more at the end."""
    started = time.monotonic()
    samples = []
    metered = -CPU_SAMPLE_SECONDS
    while True:
        if meter is not None and time.monotonic() - metered >= CPU_SAMPLE_SECONDS:
            meter.sample()
            metered = time.monotonic()
        count = committed(engine, account_ids)
        samples.append((time.monotonic() - started, count))
        if count >= total:
            if meter is not None:
                meter.sample()
            return samples
        if time.monotonic() - started > timeout:
            raise SystemExit(f"only {count} of {total} mails committed after {timeout:.0f}s")
        pipeline.check_alive()
        time.sleep(0.25)


STEADY_SHARES = (0.1, 0.9)
"""The sustained phase's steady state: from the commit of the mail at the first share of
them (in commit order) to that of the mail at the second."""


def steady_window(moments: list[float], shares: tuple[float, float] = STEADY_SHARES) -> tuple[float, float, int]:
    """(start, end, mails) of the steady state among commit ``moments`` (seconds since the
    epoch): the mails counted are those committed after ``start`` up to ``end``.

    A ledger row's moment is the start of the ticketer transaction that wrote it, so the
    mails of a batch share one; counting those after ``start`` up to ``end`` takes in whole
    batches, one for each gap between the batches' starts.
    """
    ordered = sorted(moments)
    start = ordered[int(shares[0] * (len(ordered) - 1))]
    end = ordered[int(shares[1] * (len(ordered) - 1))]
    if end <= start:
        raise ValueError("the steady window holds no commits apart: too few mails or batches")
    return start, end, bisect.bisect_right(ordered, end) - bisect.bisect_right(ordered, start)


def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return consumer.end_offsets([TopicPartition(topic, p) for p in range(get_topic(topic).partitions)])
    finally:
        consumer.close()


def record_moments(
    bootstrap: str, topic: str, since: dict[TopicPartition, int], account_ids: set[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """For the run's accounts' records on ``topic`` written after the offsets ``since``:
    Message-ID -> the record's Kafka timestamp (when the fetcher or the classifier
    produced it), and Message-ID -> its ``fetched_at``; both in seconds since the epoch."""
    until = end_offsets(bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    produced: dict[str, float] = {}
    fetched: dict[str, float] = {}
    try:
        consumer.assign(list(since))
        for tp, offset in since.items():
            consumer.seek(tp, offset)
        remaining = {tp for tp in since if until[tp] > since[tp]}
        while remaining:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    if record.offset < until[tp]:
                        value = decode_record(topic, record.value)
                        if value.account_id in account_ids and value.message_id is not None:
                            produced.setdefault(value.message_id, record.timestamp / 1000)
                            fetched.setdefault(value.message_id, value.fetched_at.timestamp())
                    if record.offset + 1 >= until[tp]:
                        remaining.discard(tp)
    finally:
        consumer.close()
    return produced, fetched


STAGES = (
    ("APPEND to poll (wait for the next poll, then the fetch)", "appended", "fetched"),
    ("fetcher: fetch to produce on mail.raw", "fetched", "raw"),
    ("classifier: mail.raw to mail.classified", "raw", "classified"),
    ("ticketer: mail.classified to the committed step", "classified", "committed"),
)


def stage_seconds(moments: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """Each stage's durations over the mails seen at every moment of ``moments``
    (moment name -> Message-ID -> seconds since the epoch)."""
    complete = set.intersection(*(set(times) for times in moments.values()))
    return {
        stage: [moments[end][m] - moments[start][m] for m in complete] for stage, start, end in STAGES
    }


def latency_mail(number: int, run: str) -> tuple[str, bytes]:
    message_id = f"<latency-{number}.{run}@bench.mailintake.test>"
    raw = (
        f"From: Kunde {number} <kunde{number}@latency.example.com>\r\nTo: support@helpdesk.example.org\r\n"
        f"Subject: Latency probe {number}\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nThe printer is jammed again.\r\n"
    )
    return message_id, raw.encode()


APPENDERS = 4
MAX_APPEND_BATCH = 50
"""Mails per MULTIAPPEND at most, when a client has fallen behind its schedule."""


def append_at_rate(endpoints, users, rate: float, seconds: float, run: str) -> dict[str, float]:
    """Append mails to ``users`` at ``rate`` per second in all, from ``APPENDERS`` clients
    in threads, each appending the mails due at its turn in one MULTIAPPEND (at most
    ``MAX_APPEND_BATCH``); Message-ID -> when the command that appended it completed."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.fetcher_throughput import _imap

    started = time.monotonic()
    count = min(APPENDERS, len(users))

    def appender(index: int) -> dict[str, float]:
        mine = users[index::count]
        clients = [_imap(endpoints, user.name, user.password) for user in mine]
        appended: dict[str, float] = {}
        number = 0  # mails this client has appended
        try:
            while (elapsed := time.monotonic() - started) < seconds:
                due = min(int(elapsed * rate / count) + 1 - number, MAX_APPEND_BATCH)
                if due <= 0:
                    time.sleep(max(0.0, started + number * count / rate - time.monotonic()))
                    continue
                batch = [latency_mail((number + n) * count + index, run) for n in range(due)]
                clients[number % len(clients)].multiappend("INBOX", [raw for _, raw in batch])
                completed = time.time()
                appended.update((message_id, completed) for message_id, _ in batch)
                number += due
        finally:
            for client in clients:
                client.logout()
        return appended

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(appender, range(count)))
    return {message_id: at for result in results for message_id, at in result.items()}


def plot(plots: Path, samples: list[tuple[float, int]], latencies: list[float], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot([t for t, _ in samples], [n for _, n in samples])
    axes.set_xlabel("seconds since the services started")
    axes.set_ylabel("mails committed as ticket steps")
    axes.set_title(f"Sustained: {title}")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(plots / "pipeline-sustained.png", dpi=110)
    figure, axes = plt.subplots(figsize=(7, 4))
    ordered = sorted(latencies)
    axes.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))])
    axes.axvline(POLL_INTERVAL_SECONDS + 2, color="red", linestyle="--", label="target p99: poll interval + 2 s")
    axes.set_xlabel("seconds from APPEND to the committed ticket step")
    axes.set_ylabel("share of mails")
    axes.set_title(f"Latency while mail is appended, {len(latencies)} mails (cumulative)")
    axes.legend()
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(plots / "pipeline-latency.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=10)
    parser.add_argument("--mails", type=int, default=4000, help="mails in the mailboxes for the sustained phase")
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--plots", type=Path, default=None, help="write PNG plots here")
    parser.add_argument("--classifiers", type=int, default=1, help="classifier replicas (one consumer group)")
    parser.add_argument("--ticketers", type=int, default=1, help="ticketer replicas (one consumer group)")
    parser.add_argument("--auto-answers", action="store_true", help="queue an auto-answer to each new ticket (up to the cap)")
    args = parser.parse_args()

    stack = Stack()
    endpoints = stack.endpoints
    # The stack's settings (key file, database, Kafka) as the services get them.
    os.environ.update(service_environment(endpoints))
    run = uuid.uuid4().hex[:8]
    rng = random.Random(run)
    users = [add_mail_user(f"e2eb{run}{i}", f"pw-{run}-{i}") for i in range(args.mailboxes)]
    per_mailbox = args.mails // args.mailboxes
    total = per_mailbox * args.mailboxes
    for index, user in enumerate(users):
        fill_mailbox(endpoints, user.name, user.password, [realistic_mail(rng, index * per_mailbox + n) for n in range(per_mailbox)])

    bare_started = time.monotonic()
    for user in users:
        bare_fetch(endpoints, user.name, user.password, 500)
    bare_rate = total / (time.monotonic() - bare_started)

    accounts = [
        Account(
            id=f"e2eb-{run}-{i}", name=f"E2E bench {i}", host=endpoints.host, port=endpoints.imaps_port,
            ca_file=endpoints.ca_file, username=user.name, password=user.password,
            poll_interval_seconds=POLL_INTERVAL_SECONDS,
            ticket_options={"create_user_from_local_part": True} | ({"auto_answer_template": "ack"} if args.auto_answers else {}),
            # An answer needs the account's sender address; without answers the runs stay as before.
            sender=SenderIdentity(name="IT Support", address="support@helpdesk.example.org") if args.auto_answers
            else SenderIdentity(),
        )
        for i, user in enumerate(users)
    ]
    account_ids = [a.id for a in accounts]
    with migrated_schema(endpoints.database_url, "e2e_bench") as database_url, tempfile.TemporaryDirectory() as logs:
        engine = engine_for(database_url)
        AccountStore(engine, cipher_from_settings(load_settings(AccountEncryptionSettings))).import_accounts(accounts)
        if args.auto_answers:
            with engine.begin() as connection:
                import_templates(connection, [TemplateText("ack", "Ticket {{ reference }}", "Thank you, we are on it.")])
        groups = {f"MAILINTAKE_{s.upper()}_GROUP_ID": f"e2eb-{run}-{s}" for s in SERVICES}
        place_group_at_end(endpoints.kafka_bootstrap, groups["MAILINTAKE_CLASSIFIER_GROUP_ID"], "mail.raw")
        place_group_at_end(endpoints.kafka_bootstrap, groups["MAILINTAKE_TICKETER_GROUP_ID"], "mail.classified")
        env = dict(os.environ) | groups | {
            f"MAILINTAKE_{s.upper()}_DATABASE_URL": database_url for s in SERVICES
        } | {f"MAILINTAKE_{s.upper()}_LOG_LEVEL": "WARNING" for s in SERVICES} | {
            "MAILINTAKE_TICKETER_AUTO_ANSWERS_ENABLED": "true" if args.auto_answers else "false"
        }
        pipeline = Pipeline(env, Path(logs), {"fetcher": 1, "classifier": args.classifiers, "ticketer": args.ticketers})
        try:
            stack_before = stack_cpu_seconds(stack)
            pipeline.start()
            meter = CpuMeter(pipeline, stack)
            samples = wait_committed(engine, account_ids, total, pipeline, timeout=1800, meter=meter)
            _, used = meter.samples[-1]  # taken when the last mail was seen committed
            cpu = {service: used[service] for service in SERVICES}
            stack_cpu = {name: used[name] - stack_before[name] for name in STACK_SERVERS}
            at = processed_at(engine, account_ids)
            span = max(at.values()) - min(at.values())
            rate = total / span
            steady_start, steady_end, steady_mails = steady_window(list(at.values()))
            steady_rate = steady_mails / (steady_end - steady_start)
            steady_cpu = meter.used_between(steady_start, steady_end)

            before = {topic: end_offsets(endpoints.kafka_bootstrap, topic) for topic in ("mail.raw", "mail.classified")}
            appended = append_at_rate(endpoints, users, rate / 2, args.latency_seconds, run)
            wait_committed(engine, account_ids, total + len(appended), pipeline, timeout=600)
            at = processed_at(engine, account_ids)
            latencies = [at[m] - t for m, t in appended.items()]
            ids = set(account_ids)
            raw, fetched = record_moments(endpoints.kafka_bootstrap, "mail.raw", before["mail.raw"], ids)
            classified, _ = record_moments(endpoints.kafka_bootstrap, "mail.classified", before["mail.classified"], ids)
            stages = stage_seconds(
                {"appended": appended, "fetched": fetched, "raw": raw, "classified": classified, "committed": at}
            )
            with engine.connect() as connection:
                answers_queued = connection.scalar(select(func.count()).select_from(OutboundMail))
        finally:
            pipeline.stop()

    print(
        f"mailboxes {args.mailboxes}, mails {total} ({per_mailbox} per mailbox), poll interval {POLL_INTERVAL_SECONDS}s, "
        f"{args.classifiers} classifier(s), {args.ticketers} ticketer(s), auto-answers {'on' if args.auto_answers else 'off'}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    # Every Python process of the run (the bare loop too) runs on this interpreter, and its build
    # moves the CPU per mail by up to a fifth (BENCHMARKS.md, "the interpreter's build").
    print(f"Python {' '.join(sys.version.split())}")
    print("| measurement | value |")
    print("|---|---|")
    print(f"| bare IMAP FETCH (mails/s) | {bare_rate:,.0f} |")
    print(f"| pipeline sustained, mailbox to committed step (mails/s) | {rate:,.0f} |")
    print(f"| ratio to bare | {rate / bare_rate:.2f} |")
    low, high = (round(100 * share) for share in STEADY_SHARES)
    print(
        f"| steady state ({low}-{high} % of the mails committed): mails/s, ratio to bare | "
        f"{steady_rate:,.0f}, {steady_rate / bare_rate:.2f} |"
    )
    print(
        f"| CPU seconds per 1,000 mails (fetcher + classifier + ticketer) | {sum(cpu.values()) / total * 1000:.2f} "
        f"({' + '.join(f'{cpu[s] / total * 1000:.2f}' for s in SERVICES)}) |"
    )
    print(
        "| CPU seconds per 1,000 mails of the stack meanwhile (Kafka + PostgreSQL + Dovecot) | "
        f"{sum(stack_cpu.values()) / total * 1000:.1f} ({' + '.join(f'{stack_cpu[n] / total * 1000:.2f}' for n in STACK_SERVERS)}) |"
    )
    print(
        "| steady state: CPU seconds per 1,000 mails, services (fetcher + classifier + ticketer) and stack "
        f"(Kafka + PostgreSQL + Dovecot) | {sum(steady_cpu[s] for s in SERVICES) / steady_mails * 1000:.2f} "
        f"({' + '.join(f'{steady_cpu[s] / steady_mails * 1000:.2f}' for s in SERVICES)}) and "
        f"{sum(steady_cpu[n] for n in STACK_SERVERS) / steady_mails * 1000:.2f} "
        f"({' + '.join(f'{steady_cpu[n] / steady_mails * 1000:.2f}' for n in STACK_SERVERS)}) |"
    )
    if args.auto_answers:
        print(f"| auto-answers queued (both phases) | {answers_queued:,} |")
    appended_rate = len(latencies) / args.latency_seconds
    print(
        f"| latency at {appended_rate:,.0f} mails/s appended (aimed at {rate / 2:,.0f}), {len(latencies)} mails: "
        f"p50 / p99 (s) | {statistics.median(latencies):.2f} / {percentile(latencies, 0.99):.2f} |"
    )
    print()
    print("Where a latency mail's time goes (s):")
    print("| stage | p50 | p99 |")
    print("|---|---|---|")
    for stage, seconds in stages.items():
        print(f"| {stage} | {statistics.median(seconds):.2f} | {percentile(seconds, 0.99):.2f} |")
    if args.plots is not None:
        plot(args.plots, samples, latencies, f"{total} mails in {args.mailboxes} mailboxes, {rate:,.0f} mails/s")
        print(f"plots written to {args.plots}/pipeline-sustained.png and pipeline-latency.png")


if __name__ == "__main__":
    main()
