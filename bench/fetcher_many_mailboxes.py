"""Many mailboxes on one fetcher process: poll-start lag, intervals kept, peak memory.

    .venv/bin/python bench/fetcher_many_mailboxes.py [--mailboxes 1000] [--interval 60]
        [--duration 180] [--workers N] [--mails-each 3]

Needs the local stack (``mailintake stack up``) with the topics applied. The mailboxes
are new Dovecot users, added with one write of the passwd-file (``set_users`` of
``mailintake.stack.mail_users``, one wait for Dovecot instead of one per user); each gets
``--mails-each`` mails of 2-8 KB before the run, and while it runs a separate process
delivers one new mail to every mailbox per interval, spread over the interval, so every
poll has something to fetch.

The fetcher is the real ``Fetcher.run`` (thread pool of ``--workers`` polls, the real
schedule, IMAPS with SASL PLAIN, acks=all into ``mail.raw``, ``after_fetch: mark_seen``,
marks and ``account_status`` in PostgreSQL, the service's JSON logs rendered to
/dev/null) for ``--duration`` seconds. ``Fetcher.poll`` is wrapped to record when each
poll started, how late against its due time (the value the fetcher's
``mailintake_fetcher_poll_lag_seconds`` gauge gets), how long it took and how many mails
it produced.

Reported: whether every mailbox was polled within each interval (first poll within one
interval of the start, then no gap between two poll starts above interval + 5 s);
p50/p99/max poll-start lag; peak RSS of the process during the run (VmHWM, reset just
before the fetcher starts); mails produced and expected; the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import random
import re
import ssl
import statistics
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imapclient import IMAPClient  # noqa: E402

from mailintake.runtime.http_endpoint import Health  # noqa: E402
from mailintake.runtime.logs import configure_logging  # noqa: E402
from mailintake.stack.endpoints import Endpoints  # noqa: E402
from mailintake.stack.layout import StackLayout  # noqa: E402
from mailintake.stack.mail_users import set_users  # noqa: E402
from mailintake.stack.settings import StackSettings  # noqa: E402
from services.fetcher.account import Account  # noqa: E402
from services.fetcher.service import Fetcher  # noqa: E402
from services.fetcher.settings import FetcherSettings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetcher_throughput import realistic_mail  # noqa: E402

#: Slack on "polled within its interval": a poll that starts at most this late still counts.
GAP_SLACK_SECONDS = 5.0


def _imap(endpoints: Endpoints, name: str, password: str) -> IMAPClient:
    context = ssl.create_default_context(cafile=str(endpoints.ca_file))
    client = IMAPClient(endpoints.host, port=endpoints.imaps_port, ssl=True, ssl_context=context, timeout=60)
    client.plain_login(name, password)
    return client


def deliver(endpoints: Endpoints, name: str, password: str, mails: list[bytes]) -> None:
    client = _imap(endpoints, name, password)
    try:
        client.multiappend("INBOX", mails)
    finally:
        client.logout()


def keep_delivering(endpoints: Endpoints, users: list[tuple[str, str]], interval: float, until: float) -> None:
    """In its own process (so it does not take the fetcher's GIL): one new mail to every
    mailbox per interval, each mailbox at a fixed random moment within the interval."""
    rng = random.Random(7)
    moments = sorted((rng.uniform(0, interval), name, password) for name, password in users)
    start, number, round_number = time.time(), 1_000_000, 0
    with ThreadPoolExecutor(4) as pool:
        while True:
            for offset, name, password in moments:
                when = start + round_number * interval + offset
                if when >= until:
                    return
                time.sleep(max(0.0, when - time.time()))
                number += 1
                pool.submit(deliver, endpoints, name, password, [realistic_mail(rng, number)])
            round_number += 1


class RecordingFetcher(Fetcher):
    """The real fetcher, with each poll's start, lag, duration and mails recorded."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.polls: list[tuple[str, float, float, float, int]] = []
        self.failures: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def poll(self, account: Account, *, lag_seconds: float | None = None) -> int:
        started = time.monotonic()
        try:
            count = super().poll(account, lag_seconds=lag_seconds)
        except Exception as exc:
            with self._lock:
                self.failures.append((account.id, str(exc)))
            raise
        with self._lock:
            self.polls.append((account.id, started, lag_seconds or 0.0, time.monotonic() - started, count))
        return count


def _status_mb(field: str) -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(field + r":\s+(\d+) kB", text).group(1)) / 1024


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=60)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds the fetcher runs")
    parser.add_argument("--workers", type=int, default=None, help="poll_workers (default: the setting's default)")
    parser.add_argument("--mails-each", type=int, default=3)
    args = parser.parse_args()

    settings_of_stack = StackSettings()
    endpoints = Endpoints.of(settings_of_stack)
    suffix = uuid.uuid4().hex[:6]
    users = [(f"benchmb{suffix}-{n:04d}", f"pw-{suffix}-{n}") for n in range(args.mailboxes)]
    began = time.perf_counter()
    set_users(StackLayout.of(settings_of_stack).mail_users_file, dict(users), replace_existing=False)
    print(f"added {len(users)} mail users in {time.perf_counter() - began:.1f} s (one passwd-file write)", flush=True)

    rng = random.Random(20241202)
    began = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(
            lambda user: deliver(endpoints, *user[1], [realistic_mail(rng, user[0] * 10 + i) for i in range(args.mails_each)]),
            enumerate(users),
        ))
    print(f"put {args.mails_each} mails into each mailbox in {time.perf_counter() - began:.1f} s", flush=True)

    configure_logging("fetcher", stream=open(os.devnull, "w"))  # noqa: SIM115 - open for the whole run

    overrides = {"poll_workers": args.workers} if args.workers else {}
    settings = FetcherSettings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap, database_url=endpoints.database_url, **overrides
    )
    accounts = [
        Account(
            id=f"bench-mb-{name}", name=f"Mailbox {name}", host=endpoints.host, port=endpoints.imaps_port,
            security="tls", ca_file=endpoints.ca_file, username=name, password=password,
            after_fetch="mark_seen", poll_interval_seconds=args.interval,
        )
        for name, password in users
    ]
    fetcher = RecordingFetcher(settings, accounts)

    delivering_until = time.time() + args.duration
    deliverer = multiprocessing.get_context("spawn").Process(
        target=keep_delivering, args=(endpoints, users, args.interval, delivering_until), daemon=True
    )
    deliverer.start()

    # Reset the peak (VmHWM) to the current RSS, so the peak read afterwards is the run's own.
    Path("/proc/self/clear_refs").write_text("5")
    rss_before = _status_mb("VmRSS")
    load_before = os.getloadavg()
    stop = threading.Event()
    runner = threading.Thread(target=fetcher.run, args=(Health(), stop), name="fetcher-run")
    run_started = time.monotonic()
    runner.start()
    time.sleep(args.duration)
    stop.set()
    runner.join()
    run_seconds = time.monotonic() - run_started
    peak_rss = _status_mb("VmHWM")
    load_after = os.getloadavg()
    deliverer.join(timeout=30)

    starts: dict[str, list[float]] = {a.id: [] for a in accounts}
    for account_id, started, *_ in fetcher.polls:
        starts[account_id].append(started - run_started)
    late = []
    for account_id, times in starts.items():
        times.sort()
        # Every interval that ended before the stop must hold a poll start.
        edges = [0.0, *times]
        gaps = [b - a for a, b in zip(edges, edges[1:])] + [run_seconds - edges[-1]]
        if any(gap > args.interval + GAP_SLACK_SECONDS for gap in gaps):
            late.append(account_id)
    lags = [lag for _, _, lag, _, _ in fetcher.polls]
    durations = [seconds for _, _, _, seconds, _ in fetcher.polls]
    produced = sum(count for *_, count in fetcher.polls)
    polls_per_account = [len(t) for t in starts.values()]

    print(f"date: {dt.date.today().isoformat()}  {os.cpu_count()} cores")
    print(
        f"mailboxes: {args.mailboxes}, interval {args.interval} s, ran {run_seconds:.0f} s, "
        f"poll_workers {settings.poll_workers}, fetch_chunk {settings.fetch_chunk}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; after: {' '.join(f'{x:.2f}' for x in load_after)}")
    print(
        f"polls: {len(fetcher.polls)} good, {len(fetcher.failures)} failed; per mailbox "
        f"{min(polls_per_account)}-{max(polls_per_account)}"
    )
    print(
        f"polled within every interval (+{GAP_SLACK_SECONDS:g} s): "
        f"{args.mailboxes - len(late)} of {args.mailboxes} mailboxes" + (f" (late e.g. {late[:3]})" if late else "")
    )
    if lags:
        print(
            f"poll-start lag: p50 {_percentile(lags, 0.50):.2f} s, p99 {_percentile(lags, 0.99):.2f} s, "
            f"max {max(lags):.2f} s (target p99 < 5 s)"
        )
        print(
            f"poll duration: p50 {statistics.median(durations) * 1000:.0f} ms, "
            f"p99 {_percentile(durations, 0.99) * 1000:.0f} ms"
        )
    print(f"mails produced: {produced} ({args.mails_each * args.mailboxes} put in before the run, the rest delivered during it)")
    print(f"RSS before the run {rss_before:.0f} MB, peak during it {peak_rss:.0f} MB (target < 400 MB)")
    if fetcher.failures:
        print("first failures:", *fetcher.failures[:3], sep="\n  ")


if __name__ == "__main__":
    main()
