"""The CPU of writing mail bodies to PostgreSQL: pglz against lz4, COPY's text format against binary.

    .venv/bin/python bench/postgres_body_writes.py [--bodies 5000] [--rounds 4]

Needs the local stack's PostgreSQL (``mailintake stack up``). The bodies are the ones the
classifier makes of ``pipeline_end_to_end``'s mails (run through the real classifier
first). Each round COPYs them, one transaction each way, three ways: into a column
compressed with pglz in COPY's text format, into one compressed with lz4 in the text
format, and into that lz4 column in the binary format (``copy_rows``' since it changed).
The server backend's CPU is read from ``/proc`` and this process's with
``time.process_time()``, before and after each. The three take turns in every round, so
they see the same machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench.classifier_throughput import _no_claim_check, raw_record
from bench.fetcher_throughput import realistic_mail
from bench.pipeline_end_to_end import cpu_seconds
from mailintake.contracts.records import record_decoder
from mailintake.stack import Stack
from services.classifier.core import Classifier, process
from services.classifier.service import raw_decoder
from services.classifier.settings import ClassifierSettings

# (name, column compression, COPY format)
WAYS = (("pglz, text", "pglz", "text"), ("lz4, text", "lz4", "text"), ("lz4, binary", "lz4", "binary"))


def bodies(count: int) -> list[str]:
    rng = random.Random(20241202)
    classifier, decode_raw = Classifier.from_settings(ClassifierSettings()), raw_decoder()
    decode_classified = record_decoder("mail.classified")
    return [
        decode_classified(process(decode_raw(raw_record(realistic_mail(rng, n), n)), classifier, _no_claim_check)[1]).body_text
        for n in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    texts = bodies(args.bodies)
    url = Stack().endpoints.database_url.replace("postgresql+psycopg://", "postgresql://")
    schema = f"body_writes_{os.getpid()}"
    server: dict[str, list[float]] = {name: [] for name, _, _ in WAYS}
    client: dict[str, list[float]] = {name: [] for name, _, _ in WAYS}
    with psycopg.connect(url, autocommit=True) as connection:
        backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        connection.execute(f"CREATE SCHEMA {schema}")
        try:
            for method in ("pglz", "lz4"):
                connection.execute(f"CREATE TABLE {schema}.{method} (id bigserial PRIMARY KEY, body text COMPRESSION {method})")
            for _ in range(args.rounds):
                for name, method, copy_format in WAYS:
                    server_before, client_before = cpu_seconds(backend), time.process_time()
                    statement = f"COPY {schema}.{method} (body) FROM STDIN (FORMAT {copy_format.upper()})"
                    with connection.transaction(), connection.cursor().copy(statement) as copy:
                        if copy_format == "binary":
                            copy.set_types(["text"])
                        for body in texts:
                            copy.write_row((body,))
                    client[name].append((time.process_time() - client_before) / len(texts) * 1e6)
                    server[name].append((cpu_seconds(backend) - server_before) / len(texts) * 1e6)
            sizes = {
                method: connection.execute(f"SELECT pg_total_relation_size('{schema}.{method}')").fetchone()[0]
                for method in ("pglz", "lz4")
            }
        finally:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")

    lengths = sorted(len(text.encode()) for text in texts)
    print(
        f"{args.bodies} bodies of {lengths[0]:,}-{lengths[-1]:,} bytes (median {statistics.median(lengths):,.0f}), "
        f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    print("| way | server backend CPU per body (us), by round | median | client CPU per body (us), by round | median |")
    print("|---|---|---|---|---|")
    for name, _, _ in WAYS:
        print(
            f"| {name} | {', '.join(f'{v:.0f}' for v in server[name])} | {statistics.median(server[name]):.0f} "
            f"| {', '.join(f'{v:.1f}' for v in client[name])} | {statistics.median(client[name]):.1f} |"
        )
    # The pglz table holds the bodies once a round, the lz4 table twice (text and binary).
    print(
        f"\ntable size per copy of the bodies (MB): pglz {sizes['pglz'] / args.rounds / 1e6:.1f}, "
        f"lz4 {sizes['lz4'] / (2 * args.rounds) / 1e6:.1f}"
    )

    def ratio(a: dict[str, list[float]], over: str, under: str) -> float:
        return statistics.median(x / y for x, y in zip(a[over], a[under]))

    print(f"server, lz4 / pglz (text format), median of the rounds' ratios: {ratio(server, 'lz4, text', 'pglz, text'):.2f}")
    print(f"server, binary / text (lz4), median of the rounds' ratios: {ratio(server, 'lz4, binary', 'lz4, text'):.2f}")
    print(f"client, binary / text (lz4), median of the rounds' ratios: {ratio(client, 'lz4, binary', 'lz4, text'):.2f}")

if __name__ == "__main__":
    main()
