"""PostgreSQL's CPU per mail body written, with the body column compressed by pglz and by lz4.

    .venv/bin/python bench/postgres_body_compression.py [--bodies 5000] [--rounds 4]

Needs the local stack's PostgreSQL (``mailintake stack up``). The bodies are the ones the
classifier makes of ``pipeline_end_to_end``'s mails (run through the real classifier
first). Each round COPYs them, in one transaction, into a table whose text column is set
to pglz and then into one set to lz4, and reads the server backend's CPU from ``/proc``
before and after. The two alternate in every round, so they see the same machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
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

METHODS = ("pglz", "lz4")


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
    schema = f"body_compression_{os.getpid()}"
    per_row: dict[str, list[float]] = {method: [] for method in METHODS}
    with psycopg.connect(url, autocommit=True) as connection:
        backend = connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        connection.execute(f"CREATE SCHEMA {schema}")
        try:
            for method in METHODS:
                connection.execute(f"CREATE TABLE {schema}.{method} (id bigserial PRIMARY KEY, body text COMPRESSION {method})")
            for _ in range(args.rounds):
                for method in METHODS:
                    before = cpu_seconds(backend)
                    with connection.transaction(), connection.cursor().copy(f"COPY {schema}.{method} (body) FROM STDIN") as copy:
                        for body in texts:
                            copy.write_row((body,))
                    per_row[method].append((cpu_seconds(backend) - before) / len(texts) * 1e6)
            sizes = {
                method: connection.execute(f"SELECT pg_total_relation_size('{schema}.{method}')").fetchone()[0] / args.rounds
                for method in METHODS
            }
        finally:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")

    lengths = sorted(len(text.encode()) for text in texts)
    print(
        f"{args.bodies} bodies of {lengths[0]:,}-{lengths[-1]:,} bytes (median {statistics.median(lengths):,.0f}), "
        f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    print("| compression | backend CPU per body (us), by round | median | table size per round (MB) |")
    print("|---|---|---|---|")
    for method in METHODS:
        rounds = ", ".join(f"{value:.0f}" for value in per_row[method])
        print(f"| {method} | {rounds} | {statistics.median(per_row[method]):.0f} | {sizes[method] / 1e6:.1f} |")
    ratio = statistics.median(lz / pg for lz, pg in zip(per_row["lz4"], per_row["pglz"]))
    print(f"\nlz4 / pglz, median of the rounds' ratios: {ratio:.2f}")


if __name__ == "__main__":
    main()
