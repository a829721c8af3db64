"""How the pipeline's cost grows: CPU seconds per 1,000 mails at growing mail counts, and
the fetcher's memory per 1,000 mailboxes polled.

    .venv/bin/python bench/pipeline_cost_growth.py [--mails 1000 10000 100000] [--mailboxes 1000 3000]
        [--mail-mailboxes 10] [--poll-seconds 150]

Needs the local stack (``mailintake stack up``) with the topics applied. Every run gets a
PostgreSQL schema and consumer groups of its own, and new Dovecot users.

**CPU per 1,000 mails**, once per ``--mails`` count, each with fresh processes: the
fetcher, classifier and ticketer start as ``mailintake run ...`` processes (as deployed)
on ``--mail-mailboxes`` empty mailboxes. Once all three are ready and have idled for two
poll intervals, each process's CPU time (user + system, all threads, ``/proc/PID/stat``)
is read as its baseline: start-up and idling are not the mails' cost. Then the mails go in
(realistic 2.7-8.4 KB mails, MULTIAPPEND from one thread per mailbox) while the pipeline
runs, and when the last is committed in PostgreSQL (the ticketer's ledger) the CPU time is
read again. Reported per process: CPU seconds above the baseline and per 1,000 mails, and
peak RSS (VmHWM); the wall time from the first APPEND to the last commit. The appending
client runs in this process and is not counted.

**Memory per 1,000 mailboxes**, once per ``--mailboxes`` count: one fetcher process polls
that many mailboxes (one mail each, a 60 s interval) for ``--poll-seconds``; its RSS
(``/proc/PID/status``) is sampled every second. Reported: RSS at the end and its peak, per
1,000 mailboxes, and how many mailboxes were polled in the last interval
(``account_status.last_poll_at``), so a fetcher that fell behind shows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from bench.fetcher_throughput import _imap, realistic_mail  # noqa: E402
from bench.pipeline_end_to_end import Pipeline, committed, cpu_seconds  # noqa: E402
from mailintake.database import engine_for  # noqa: E402
from mailintake.local_environment import service_environment  # noqa: E402
from mailintake.runtime.settings import load_settings  # noqa: E402
from mailintake.stack import Stack, add_mail_user  # noqa: E402
from mailintake.stack.layout import StackLayout  # noqa: E402
from mailintake.stack.mail_users import set_users  # noqa: E402
from mailintake.stack.settings import StackSettings  # noqa: E402
from services.fetcher.account import Account  # noqa: E402
from services.fetcher.account_store import AccountStore  # noqa: E402
from services.fetcher.password_cipher import cipher_from_settings  # noqa: E402
from services.fetcher.settings import AccountEncryptionSettings  # noqa: E402
from services.fetcher.tables import AccountStatus  # noqa: E402
from tests.database_schemas import migrated_schema  # noqa: E402
from tests.ticketer.running_ticketer import place_group_at_end  # noqa: E402

PIPELINE_SERVICES = ("fetcher", "classifier", "ticketer")
POLL_INTERVAL_SECONDS = 5
MAILBOX_POLL_INTERVAL_SECONDS = 60
APPEND_PER_COMMAND = 500


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(field + r":\s+(\d+) kB", text).group(1))


def wait_ready(pipeline: Pipeline, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for service, port in pipeline.ports.items():
        while True:
            pipeline.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the {service} was not ready after {timeout:.0f} s")
            time.sleep(0.5)


def account_for(endpoints, run: str, index: int, name: str, password: str, interval: int) -> Account:
    return Account(
        id=f"cost-{run}-{index}", name=f"Cost bench {index}", host=endpoints.host, port=endpoints.imaps_port,
        ca_file=endpoints.ca_file, username=name, password=password, after_fetch="mark_seen",
        poll_interval_seconds=interval, ticket_options={"create_user_from_local_part": True},
    )


def pipeline_environment(endpoints, database_url: str, run: str, services: tuple[str, ...]) -> dict[str, str]:
    groups = {f"MAILINTAKE_{s.upper()}_GROUP_ID": f"cost-{run}-{s}" for s in services}
    if "classifier" in services:
        place_group_at_end(endpoints.kafka_bootstrap, groups["MAILINTAKE_CLASSIFIER_GROUP_ID"], "mail.raw")
    if "ticketer" in services:
        place_group_at_end(endpoints.kafka_bootstrap, groups["MAILINTAKE_TICKETER_GROUP_ID"], "mail.classified")
    return (
        dict(os.environ)
        | groups
        | {f"MAILINTAKE_{s.upper()}_DATABASE_URL": database_url for s in services}
        | {f"MAILINTAKE_{s.upper()}_LOG_LEVEL": "WARNING" for s in services}
    )


@dataclass
class MailsRun:
    mails: int
    wall_seconds: float
    cpu: dict[str, float]
    peak_rss_mb: dict[str, float]
    idle_cpu_per_second: float


def cpu_per_mails(endpoints, mails: int, mailboxes: int) -> MailsRun:
    run = uuid.uuid4().hex[:8]
    users = [add_mail_user(f"costm{run}{i}", f"pw-{run}-{i}") for i in range(mailboxes)]
    accounts = [account_for(endpoints, run, i, u.name, u.password, POLL_INTERVAL_SECONDS) for i, u in enumerate(users)]
    account_ids = [a.id for a in accounts]
    with migrated_schema(endpoints.database_url, "cost_bench") as database_url, tempfile.TemporaryDirectory() as logs:
        engine = engine_for(database_url)
        AccountStore(engine, cipher_from_settings(load_settings(AccountEncryptionSettings))).import_accounts(accounts)
        pipeline = Pipeline(pipeline_environment(endpoints, database_url, run, PIPELINE_SERVICES), Path(logs))
        try:
            pipeline.start()
            wait_ready(pipeline)
            settle_started = time.monotonic()
            settle_cpu = sum(pipeline.cpu_seconds().values())
            time.sleep(2 * POLL_INTERVAL_SECONDS)
            idle_cpu_per_second = (sum(pipeline.cpu_seconds().values()) - settle_cpu) / (time.monotonic() - settle_started)
            baseline = {s: cpu_seconds(p.pid) for s, p in pipeline.processes.items()}
            started = time.monotonic()
            per_mailbox = mails // mailboxes

            def fill(index: int) -> None:
                rng = random.Random(f"{run}-{index}")
                user = users[index]
                client = _imap(endpoints, user.name, user.password)
                try:
                    for first in range(0, per_mailbox, APPEND_PER_COMMAND):
                        count = min(APPEND_PER_COMMAND, per_mailbox - first)
                        number = index * per_mailbox + first
                        client.multiappend("INBOX", [realistic_mail(rng, number + n) for n in range(count)])
                finally:
                    client.logout()

            with ThreadPoolExecutor(mailboxes) as pool:
                list(pool.map(fill, range(mailboxes)))
            total = per_mailbox * mailboxes
            while committed(engine, account_ids) < total:
                pipeline.check_alive()
                if time.monotonic() - started > 3600:
                    raise SystemExit(f"only {committed(engine, account_ids)} of {total} mails committed after an hour")
                time.sleep(0.5)
            wall = time.monotonic() - started
            cpu = {s: cpu_seconds(p.pid) - baseline[s] for s, p in pipeline.processes.items()}
            peak = {s: status_kb(p.pid, "VmHWM") / 1024 for s, p in pipeline.processes.items()}
        finally:
            pipeline.stop()
    return MailsRun(total, wall, cpu, peak, idle_cpu_per_second)


@dataclass
class MailboxesRun:
    mailboxes: int
    rss_end_mb: float
    rss_peak_mb: float
    polled_last_interval: int
    rss_before_polls_mb: float


def memory_per_mailboxes(endpoints, mailboxes: int, poll_seconds: float) -> MailboxesRun:
    run = uuid.uuid4().hex[:6]
    users = [(f"costb{run}-{n:04d}", f"pw-{run}-{n}") for n in range(mailboxes)]
    set_users(StackLayout.of(StackSettings()).mail_users_file, dict(users), replace_existing=False)
    rng = random.Random(run)
    mails = [realistic_mail(rng, n) for n in range(mailboxes)]

    def deliver(index: int) -> None:
        name, password = users[index]
        client = _imap(endpoints, name, password)
        try:
            client.append("INBOX", mails[index])
        finally:
            client.logout()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(deliver, range(mailboxes)))
    accounts = [account_for(endpoints, run, i, name, pw, MAILBOX_POLL_INTERVAL_SECONDS) for i, (name, pw) in enumerate(users)]
    with migrated_schema(endpoints.database_url, "cost_bench") as database_url, tempfile.TemporaryDirectory() as logs:
        engine = engine_for(database_url)
        AccountStore(engine, cipher_from_settings(load_settings(AccountEncryptionSettings))).import_accounts(accounts)
        pipeline = Pipeline(pipeline_environment(endpoints, database_url, run, ("fetcher",)), Path(logs), replicas={"fetcher": 1})
        samples: list[float] = []
        try:
            pipeline.start()
            wait_ready(pipeline)
            pid = pipeline.processes["fetcher"].pid
            before = status_kb(pid, "VmRSS") / 1024
            started = time.monotonic()
            while time.monotonic() - started < poll_seconds:
                pipeline.check_alive()
                samples.append(status_kb(pid, "VmRSS") / 1024)
                time.sleep(1.0)
            peak = status_kb(pid, "VmHWM") / 1024
            since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=MAILBOX_POLL_INTERVAL_SECONDS)
            with engine.connect() as connection:
                polled = connection.scalar(
                    select(func.count()).select_from(AccountStatus).where(AccountStatus.last_poll_at >= since)
                )
        finally:
            pipeline.stop()
    return MailboxesRun(mailboxes, samples[-1], peak, polled, before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--mail-mailboxes", type=int, default=10, help="mailboxes the mails are spread over")
    parser.add_argument("--mailboxes", type=int, nargs="*", default=[1000, 3000])
    parser.add_argument("--poll-seconds", type=float, default=150.0, help="how long the fetcher polls the mailboxes")
    args = parser.parse_args()
    if args.poll_seconds < 1:
        parser.error("--poll-seconds must be at least 1: the memory is sampled once a second")

    endpoints = Stack().endpoints
    # The stack's settings (key file, database, Kafka) as the services get them.
    os.environ.update(service_environment(endpoints))
    print(f"date: {dt.date.today().isoformat()}  {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)

    if args.mails:
        print("\n| mails | wall s | " + " | ".join(f"{s} CPU s" for s in PIPELINE_SERVICES)
              + " | all CPU s | CPU s per 1,000 mails | " + " | ".join(f"{s} per 1,000" for s in PIPELINE_SERVICES)
              + " | peak RSS MB (f / c / t) | load after |")
        print("|" + "---|" * (6 + 2 * len(PIPELINE_SERVICES)))
    for mails in args.mails:
        result = cpu_per_mails(endpoints, mails, args.mail_mailboxes)
        total = sum(result.cpu.values())
        per = {s: result.cpu[s] / result.mails * 1000 for s in PIPELINE_SERVICES}
        print(
            f"| {result.mails:,} | {result.wall_seconds:.0f} | "
            + " | ".join(f"{result.cpu[s]:.1f}" for s in PIPELINE_SERVICES)
            + f" | {total:.1f} | {total / result.mails * 1000:.2f} | "
            + " | ".join(f"{per[s]:.2f}" for s in PIPELINE_SERVICES)
            + f" | {' / '.join(f'{result.peak_rss_mb[s]:.0f}' for s in PIPELINE_SERVICES)}"
            + f" | {os.getloadavg()[0]:.1f} |",
            flush=True,
        )
        print(f"  (idle before the mails: {result.idle_cpu_per_second:.2f} CPU s per second for the three, not subtracted)", flush=True)

    if args.mailboxes:
        print(f"\nfetcher polling mailboxes (interval {MAILBOX_POLL_INTERVAL_SECONDS} s, {args.poll_seconds:.0f} s):")
        print("| mailboxes | RSS ready, before polls MB | RSS at end MB | peak RSS MB | peak per 1,000 mailboxes MB | polled in the last interval | load after |")
        print("|---|---|---|---|---|---|---|")
    results = []
    for mailboxes in args.mailboxes:
        result = memory_per_mailboxes(endpoints, mailboxes, args.poll_seconds)
        results.append(result)
        print(
            f"| {mailboxes:,} | {result.rss_before_polls_mb:.0f} | {result.rss_end_mb:.0f} | {result.rss_peak_mb:.0f} | "
            f"{result.rss_peak_mb / mailboxes * 1000:.0f} | {result.polled_last_interval:,} of {mailboxes:,} | {os.getloadavg()[0]:.1f} |",
            flush=True,
        )
    if len(results) >= 2:
        low, high = results[0], results[-1]
        slope = (high.rss_peak_mb - low.rss_peak_mb) / (high.mailboxes - low.mailboxes) * 1000
        print(f"peak RSS grows by {slope:.0f} MB per 1,000 more mailboxes ({low.mailboxes:,} -> {high.mailboxes:,})")


if __name__ == "__main__":
    main()
