"""Fetcher throughput on one IMAP mailbox, as a ratio to a bare imapclient FETCH loop.

    .venv/bin/python bench/fetcher_throughput.py [--mails 10000] [--rounds 3] [--fetch-chunk-bytes N]

Needs the local stack (``mailintake stack up``) with the topics applied. A fresh Dovecot
user gets ``--mails`` mails of 2-8 KB with realistic headers (Received chain,
DKIM-Signature, Message-ID, Outlook/Gmail-like bodies), put in with IMAP MULTIAPPEND.

Per round, side by side on the same mailbox:

- **bare**: one imapclient IMAPS session, SELECT, UID SEARCH ALL, then ``UID FETCH
  BODY.PEEK[]`` of ``--bare-chunk`` UIDs per command, until every mail's bytes are in
  memory. Nothing is produced or written: this is what the mail server and the TLS
  connection give, the fetcher's limit.
- **lean bare**: the same loop with imaplib's debug formatting off. imapclient turns it
  on, and it formats a repr of every response whatever the log level; the fetcher's
  sessions turn it off, so this loop is the stricter limit.
- **fetcher**: the real ``Fetcher.poll`` with its own acks=all idempotent producer into
  the real ``mail.raw``, ``after_fetch: mark_seen``, the durable mark in PostgreSQL and
  the service's JSON logs (rendered, written to /dev/null). Each round uses a new
  account id, so it starts without a mark and fetches all mails again (mark_seen does not
  hide mails from a poll: the mark is the UID, not the flag).

The order rotates per round, and the ratios are taken per round and reported as the
median, so the machine's load shifts all three sides.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import ssl
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from imapclient import IMAPClient  # noqa: E402

from bench.mail_corpus import WORDS, prose  # noqa: E402
from mailintake.runtime.logs import configure_logging  # noqa: E402
from mailintake.stack import add_mail_user  # noqa: E402
from mailintake.stack.endpoints import Endpoints  # noqa: E402
from mailintake.stack.settings import StackSettings  # noqa: E402
from services.fetcher.account import Account  # noqa: E402
from services.fetcher.service import Fetcher  # noqa: E402
from services.fetcher.settings import FetcherSettings  # noqa: E402

def realistic_mail(rng: random.Random, number: int) -> bytes:
    """A 2-8 KB mail with the headers a mail that crossed the internet carries."""
    sender = f"user{number % 300}@customer{number % 40}.example.com"
    stamp = dt.datetime(2024, 12, 2, 9, tzinfo=dt.UTC) + dt.timedelta(seconds=37 * number)
    date = stamp.strftime("%a, %d %b %Y %H:%M:%S +0000")
    received = "".join(
        f"Received: from mx{hop}.customer{number % 40}.example.com (mx{hop}.customer{number % 40}.example.com "
        f"[192.0.2.{(number + hop) % 250 + 1}])\r\n\tby mail.helpdesk.example.org (Postfix) with ESMTPS id "
        f"{rng.getrandbits(40):010X}\r\n\tfor <support@helpdesk.example.org>; {date}\r\n"
        for hop in range(rng.randint(2, 4))
    )
    dkim = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(344))
    body = prose(rng, rng.randint(1_200, 6_500), newline="\r\n", paragraphs=False)
    head = (
        f"Return-Path: <{sender}>\r\n{received}"
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=customer{number % 40}.example.com; s=sel1;\r\n"
        f"\th=from:to:subject:date:message-id; bh={dkim[:44]}=;\r\n\tb={dkim[44:120]}\r\n\t{dkim[120:]}\r\n"
        f"Authentication-Results: mail.helpdesk.example.org; dkim=pass; spf=pass smtp.mailfrom={sender}\r\n"
        f'From: "Kunde {number % 300}" <{sender}>\r\nTo: IT Support <support@helpdesk.example.org>\r\n'
        f"Subject: =?utf-8?q?{rng.choice(WORDS)}_{number}_=E2=80=93_{rng.choice(WORDS)}?=\r\n"
        f"Date: {date}\r\nMessage-ID: <{uuid.UUID(int=rng.getrandbits(128))}@customer{number % 40}.example.com>\r\n"
        "MIME-Version: 1.0\r\nX-Mailer: Microsoft Outlook 16.0\r\nThread-Index: AdlFq3o9yZ==\r\n"
        "Content-Language: de-DE\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return (head + body + "\r\n").encode()


def _imap(endpoints: Endpoints, name: str, password: str) -> IMAPClient:
    context = ssl.create_default_context(cafile=str(endpoints.ca_file))
    client = IMAPClient(endpoints.host, port=endpoints.imaps_port, ssl=True, ssl_context=context, timeout=60)
    client.plain_login(name, password)
    return client


def fill_mailbox(endpoints: Endpoints, name: str, password: str, mails: list[bytes], per_command: int = 500) -> None:
    client = _imap(endpoints, name, password)
    try:
        for start in range(0, len(mails), per_command):
            client.multiappend("INBOX", mails[start : start + per_command])
    finally:
        client.logout()


def bare_fetch(endpoints: Endpoints, name: str, password: str, chunk: int, *, lean: bool = False) -> tuple[int, int]:
    """(mails, bytes) fetched with plain UID FETCH BODY.PEEK[] commands; ``lean``: imaplib's debug formatting off."""
    client = _imap(endpoints, name, password)
    if lean:
        client._imap.debug = 0
    mails = size = 0
    try:
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        for start in range(0, len(uids), chunk):
            for data in client.fetch(uids[start : start + chunk], ["BODY.PEEK[]"]).values():
                mails += 1
                size += len(data[b"BODY[]"])
    finally:
        client.logout()
    return mails, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--fetch-chunk-bytes", type=int, default=None, help="the fetcher's fetch_chunk_bytes (default: its setting's default)"
    )
    parser.add_argument("--bare-chunk", type=int, default=500, help="UIDs per FETCH command of the bare loop")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the last fetcher round here")
    args = parser.parse_args()

    endpoints = Endpoints.of(StackSettings())
    suffix = uuid.uuid4().hex[:8]
    user = add_mail_user(f"benchtp{suffix}", f"pw-{suffix}")
    rng = random.Random(20241202)
    mails = [realistic_mail(rng, n) for n in range(args.mails)]
    started = time.perf_counter()
    fill_mailbox(endpoints, user.name, user.password, mails)
    print(f"filled {user.name} with {len(mails)} mails by MULTIAPPEND in {time.perf_counter() - started:.1f} s", flush=True)

    # The service's logging, rendered in full but written nowhere, so its cost is measured.
    configure_logging("fetcher", stream=open(os.devnull, "w"))  # noqa: SIM115 - open for the whole run

    overrides = {"fetch_chunk_bytes": args.fetch_chunk_bytes} if args.fetch_chunk_bytes else {}
    settings = FetcherSettings(
        kafka_bootstrap_servers=endpoints.kafka_bootstrap, database_url=endpoints.database_url, **overrides
    )

    def account(round_number: int) -> Account:
        return Account(
            id=f"bench-tp-{suffix}-{round_number}", name="Throughput bench", host=endpoints.host,
            port=endpoints.imaps_port, security="tls", ca_file=endpoints.ca_file, username=user.name,
            password=user.password, after_fetch="mark_seen", poll_interval_seconds=60,
        )

    fetcher = Fetcher(settings, [account(0)])
    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {"bare": [], "lean bare": [], "fetcher": []}
    try:
        for round_number in range(1, args.rounds + 1):
            def run_bare(lean: bool) -> float:
                begun = time.perf_counter()
                count, _ = bare_fetch(endpoints, user.name, user.password, args.bare_chunk, lean=lean)
                assert count == len(mails), f"bare fetched {count} of {len(mails)}"
                return count / (time.perf_counter() - begun)

            def run_fetcher() -> float:
                profiler = None
                if args.profile and round_number == args.rounds:
                    import cProfile

                    profiler = cProfile.Profile()
                    profiler.enable()
                begun = time.perf_counter()
                count = fetcher.poll(account(round_number))
                elapsed = time.perf_counter() - begun
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
                assert count == len(mails), f"fetcher produced {count} of {len(mails)}"
                return count / elapsed

            runs = {"bare": lambda: run_bare(False), "lean bare": lambda: run_bare(True), "fetcher": run_fetcher}
            names = list(runs)
            order = names[(round_number - 1) % 3 :] + names[: (round_number - 1) % 3]
            for name in order:
                rates[name].append(runs[name]())
            fetched = rates["fetcher"][-1]
            print(
                f"round {round_number} ({', '.join(order)}): bare {rates['bare'][-1]:6.0f}, lean bare "
                f"{rates['lean bare'][-1]:6.0f}, fetcher {fetched:6.0f} mails/s; ratio {fetched / rates['bare'][-1]:.2f}, "
                f"to lean bare {fetched / rates['lean bare'][-1]:.2f}  (load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    finally:
        fetcher.close()

    sizes = sorted(len(m) for m in mails)
    print(f"date: {dt.date.today().isoformat()}  python {platform.python_version()}  {os.cpu_count()} cores")
    print(
        f"mailbox: {len(mails)} mails, {sizes[0] / 1024:.1f}-{sizes[-1] / 1024:.1f} KB "
        f"(median {statistics.median(sizes) / 1024:.1f} KB, {sum(sizes) / 1e6:.1f} MB); "
        f"fetcher fetch_chunk_bytes {settings.fetch_chunk_bytes}, bare {args.bare_chunk} UIDs per FETCH"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratios = [f / b for f, b in zip(rates["fetcher"], rates["bare"], strict=True)]
    lean_ratios = [f / b for f, b in zip(rates["fetcher"], rates["lean bare"], strict=True)]
    print(f"bare imapclient FETCH BODY.PEEK[] (median):      {statistics.median(rates['bare']):7.0f} mails/s")
    print(f"lean bare, imaplib debug formatting off (median): {statistics.median(rates['lean bare']):7.0f} mails/s")
    print(f"Fetcher.poll -> mail.raw acks=all (median):      {statistics.median(rates['fetcher']):7.0f} mails/s")
    print(f"ratio fetcher / bare, median of rounds:          {statistics.median(ratios):7.2f}  "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.5)")
    print(f"ratio fetcher / lean bare, median of rounds:     {statistics.median(lean_ratios):7.2f}  "
          f"(rounds: {', '.join(f'{r:.2f}' for r in lean_ratios)})")


if __name__ == "__main__":
    main()
