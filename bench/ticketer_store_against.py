"""The ticketer's batch transaction, batch after batch, beside another revision's.

    .venv/bin/python bench/ticketer_store_against.py [--scenario new-users] [--against REV] [--batches 8]
                                                     [--batch 500] [--bases 5]

Needs the local stack (``mailintake stack up``). Every mail opens a ticket. Scenarios:

- ``new-users``: every mail comes from a sender seen for the first time, and the senders
  share a few local parts (``info@``, ``support@`` ... of one customer domain each), as
  when a help desk's mailbox first meets its customers. So after the first batch every
  new user needs a numbered login (``info-2``, ``info-3`` ...).
- ``auto-answers``: every mail comes from a sender of its own, and the account sends an
  auto-answer to each new ticket (``auto_answers_enabled``, a template of one line).

Each side applies the same batches through its ``TicketStore.apply_batch`` (the ticketer's
PostgreSQL transaction, one per batch) into a schema of its own, migrated to this tree's
head, and reports per batch the wall time of the transaction and the statements it sent.
With ``--against REV`` the revision's ``services/`` and ``mailintake/`` (``git archive``)
run in a second process beside this tree's, and the two take turns batch by batch, so the
ratio per batch is measured side by side on a machine whose speed drifts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASES = ("info", "support", "noreply", "office", "service", "kontakt", "billing", "sales")


def worker(database_url: str, scenario: str, batch_size: int, bases: int) -> None:
    """Applies batch number N for each line N read from stdin; one JSON line per batch."""
    from sqlalchemy import event, text

    from mailintake.database import engine_for
    from services.ticketer.auto_answer_outbox import import_templates
    from services.ticketer.auto_answer_templates import TemplateText
    from services.ticketer.settings import TicketerSettings
    from services.ticketer.store import BatchItem, TicketStore
    from tests.ticketer.mails import classified

    engine = engine_for(database_url)
    answering = scenario == "auto-answers"
    if answering:
        with engine.begin() as connection:
            import_templates(connection, [TemplateText("ack", "Ticket {{ reference }}", "Thank you, we are on it.")])
    store = TicketStore(engine, TicketerSettings(auto_answers_enabled=answering))
    options = {"create_user_from_local_part": True, "auto_answer_template": "ack" if answering else None}
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    for line in sys.stdin:
        number = int(line)
        items = []
        for index in range(batch_size):
            serial = number * batch_size + index
            local_part = f"customer{serial}" if answering else BASES[index % bases]
            sender = f"{local_part}@customer{serial}.example.com"
            mail = classified("bench", str(serial), sender=sender, subject=f"Request {serial}", **options)
            items.append(BatchItem(mail))
        statements.clear()
        started = time.perf_counter()
        handled = store.apply_batch(items)
        seconds = time.perf_counter() - started
        opened = sum(1 for h in handled for e in h.events if e.kind.value == "TICKET_CREATED")
        created = sum(1 for h in handled for e in h.events if e.kind.value == "USER_CREATED")
        statement_count = len(statements)
        with engine.connect() as connection:
            answers = connection.execute(text("SELECT count(*) FROM outbound_mails")).scalar()
        print(json.dumps({"batch": number, "seconds": seconds, "statements": statement_count, "opened": opened,
                          "users_created": created, "answers": answers}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("new-users", "auto-answers"), default="new-users")
    parser.add_argument("--against", metavar="REV", help="a git revision to run beside this tree")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=500, help="mails per batch (the ticketer's default maximum)")
    parser.add_argument("--bases", type=int, default=5, help=f"local parts the senders share (at most {len(BASES)})")
    parser.add_argument("--worker", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.scenario, args.batch, args.bases)
        return

    sys.path.insert(0, str(ROOT))
    from mailintake.stack import Stack
    from tests.database_schemas import migrated_schema

    database_url = Stack().up().database_url
    with tempfile.TemporaryDirectory() as folder:
        sides = {"this tree": ROOT}
        if args.against:
            archive = subprocess.run(["git", "archive", args.against, "services", "mailintake", "tests"], cwd=ROOT,
                                     capture_output=True, check=False)
            if archive.returncode != 0:
                raise SystemExit(f"cannot read {args.against}: {archive.stderr.decode().strip()}")
            subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
            sides[args.against] = Path(folder)
        with (
            migrated_schema(database_url, "bench_store_a") as url_a,
            migrated_schema(database_url, "bench_store_b") as url_b,
        ):
            processes = {
                name: subprocess.Popen(
                    [sys.executable, str(Path(__file__).resolve()), "--worker", url, "--scenario", args.scenario,
                     "--batch", str(args.batch), "--bases", str(args.bases)],
                    cwd=source, env={**os.environ, "PYTHONPATH": str(source)}, stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True,
                )
                for (name, source), url in zip(sides.items(), (url_a, url_b))
            }
            results: dict[str, list[dict]] = {name: [] for name in processes}
            for number in range(args.batches):
                # The side that goes first alternates, so neither always meets a warmer server.
                order = list(processes) if number % 2 == 0 else list(reversed(processes))
                for name in order:
                    process = processes[name]
                    process.stdin.write(f"{number}\n")
                    process.stdin.flush()
                    line = process.stdout.readline()
                    if not line:
                        raise SystemExit(f"the worker of {name} stopped (exit {process.wait()})")
                    result = json.loads(line)
                    if result["opened"] != args.batch or result["users_created"] != args.batch:
                        raise SystemExit(f"{name} opened {result['opened']} tickets and created "
                                         f"{result['users_created']} users in batch {number + 1}, not {args.batch} "
                                         "each: its numbers would not compare like with like")
                    answers_due = (number + 1) * args.batch if args.scenario == "auto-answers" else 0
                    if result["answers"] != answers_due:
                        raise SystemExit(f"{name} has {result['answers']} auto-answers queued after batch "
                                         f"{number + 1}, not {answers_due}")
                    results[name].append(result)
            for process in processes.values():
                process.stdin.close()
                process.wait(30)

    names = list(results)
    shared = f"{args.bases} local parts shared" if args.scenario == "new-users" else "each answered"
    print(f"{args.scenario}: {args.batches} batches of {args.batch} mails, each from a new sender; {shared}")
    header = "| batch | users before |" + "".join(f" {n}: ms | {n}: statements |" for n in names)
    if len(names) == 2:
        header += f" ratio ({names[0]} / {names[1]}) |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(names) + (len(names) == 2)))
    for number in range(args.batches):
        row = f"| {number + 1} | {number * args.batch:,} |"
        for name in names:
            r = results[name][number]
            row += f" {r['seconds'] * 1000:,.0f} | {r['statements']} |"
        if len(names) == 2:
            row += f" {results[names[0]][number]['seconds'] / results[names[1]][number]['seconds']:.2f} |"
        print(row)


if __name__ == "__main__":
    main()
