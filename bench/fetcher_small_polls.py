"""What one poll of a mailbox with a few new mails costs: the many-mailbox case, one poll at a time.

    .venv/bin/python bench/fetcher_small_polls.py [--mailboxes 40] [--mails-each 3] [--tree DIR]

Needs the local stack (``mailintake stack up``) with the topics applied. ``--mailboxes``
new Dovecot users get ``--mails-each`` mails of 2-8 KB (the throughput bench's mails);
then the real ``Fetcher.poll`` (IMAPS, SASL PLAIN, acks=all into ``mail.raw``,
``mark_seen``, marks and ``account_status`` in PostgreSQL, JSON logs to /dev/null) polls
each once, one after another. Reported: p50 and p90 of the poll durations and the
process's CPU per poll. Unlike ``fetcher_many_mailboxes.py`` nothing runs beside the
polls, so the cost of one poll shows without the schedule and the workers around it.

``--tree`` imports the fetcher from another checkout of the repository (a copy of an
older commit, say), so two versions can be measured side by side with the same script.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mailboxes", type=int, default=40)
    parser.add_argument("--mails-each", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1], help="checkout to import from")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    from mailintake.runtime.logs import configure_logging
    from mailintake.stack import add_mail_user
    from mailintake.stack.endpoints import Endpoints
    from mailintake.stack.settings import StackSettings
    from services.fetcher import service
    from services.fetcher.account import Account
    from services.fetcher.settings import FetcherSettings

    # The throughput bench's mails; it puts this checkout first on sys.path, after the
    # fetcher was imported from --tree above.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fetcher_throughput import fill_mailbox, realistic_mail

    endpoints = Endpoints.of(StackSettings())
    try:
        configure_logging("fetcher", stream=open(os.devnull, "w"))  # noqa: SIM115 - open for the whole run
    except TypeError:  # a --tree from before configure_logging took a stream binds the stderr of the moment
        real_stderr, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115
        configure_logging("fetcher")
        sys.stderr = real_stderr

    rng = random.Random(20241202)
    suffix = uuid.uuid4().hex[:6]
    users = [add_mail_user(f"benchsp{suffix}{n:03d}", f"pw-{suffix}") for n in range(args.mailboxes)]
    for user in users:
        fill_mailbox(endpoints, user.name, user.password, [realistic_mail(rng, n) for n in range(args.mails_each)])
    settings = FetcherSettings(kafka_bootstrap_servers=endpoints.kafka_bootstrap, database_url=endpoints.database_url)
    accounts = [
        Account(
            id=f"bench-sp-{user.name}", name="Small polls bench", host=endpoints.host, port=endpoints.imaps_port,
            security="tls", ca_file=endpoints.ca_file, username=user.name, password=user.password,
            after_fetch="mark_seen",
        )
        for user in users
    ]
    fetcher = service.Fetcher(settings, accounts)
    load_before = os.getloadavg()
    durations = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        for account in accounts:
            begun = time.perf_counter()
            count = fetcher.poll(account)
            durations.append(time.perf_counter() - begun)
            assert count == args.mails_each, f"{account.id}: {count} of {args.mails_each} mails"
    finally:
        fetcher.close()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    durations.sort()
    print(f"fetcher from {Path(service.__file__).resolve().parents[2].name}; {args.mailboxes} mailboxes, {args.mails_each} mails each, polled one at a time")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"poll duration: p50 {statistics.median(durations) * 1000:.0f} ms, "
          f"p90 {durations[int(len(durations) * 0.9)] * 1000:.0f} ms; CPU per poll {cpu / len(accounts) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
