"""Auto-bundling from real mailboxes: IMAP APPEND -> fetcher -> classifier -> ticketer.

Poll cycles are steered by appending each mail as soon as the previous one is in the
ledger: the fetcher's next poll then reads it, so consecutive mails land in consecutive
cycles. The test checks the cycles the ledger recorded, so a slow machine that breaks
that assumption fails loudly instead of testing the wrong case.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time

import pytest
from imapclient import IMAPClient
from sqlalchemy import select

from mailintake.database import engine_for
from mailintake.demo import demo_mail
from mailintake.stack import add_mail_user
from services.ticketer.tables import ProcessedMail, Ticket, TicketStep
from tests.ticketer.running_ticketer import delete_group_and_topics, place_group_at_end

pytestmark = pytest.mark.stack

POLL_SECONDS = 6


def append(stack, user, *mails: bytes) -> None:
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with IMAPClient(stack.host, port=stack.imaps_port, ssl=True, ssl_context=context, timeout=30) as client:
        client.plain_login(user.name, user.password)
        for mail in mails:
            client.append("INBOX", mail)


def account_entry(stack, user, account_id: str, auto_bundle: bool) -> str:
    return f"""  - id: {account_id}
    name: Bundling {user.address}
    host: {stack.host}
    port: {stack.imaps_port}
    security: tls
    ca_file: {stack.ca_file}
    username: {user.name}
    password: {user.password}
    poll_interval_seconds: {POLL_SECONDS}
    ticket_options:
      auto_bundle: {str(auto_bundle).lower()}
      create_user_from_local_part: true
"""


def ledger(database_url: str, account_id: str) -> dict[str, ProcessedMail]:
    """Ledger rows of the account by the mail's subject-and-body tag (see ``mail``)."""
    with engine_for(database_url).connect() as connection:
        rows = connection.execute(select(ProcessedMail).where(ProcessedMail.account_id == account_id)).all()
        steps = dict(
            connection.execute(
                select(TicketStep.source_id, TicketStep.body_text).where(TicketStep.account_id == account_id)
            ).all()
        )
    return {steps.get(row.source_id, row.source_id).strip(): row for row in rows}


def wait_for(database_url: str, account_id: str, count: int, timeout: float = 90) -> dict[str, ProcessedMail]:
    deadline = time.monotonic() + timeout
    while True:
        rows = ledger(database_url, account_id)
        if len(rows) >= count:
            return rows
        assert time.monotonic() < deadline, f"{account_id}: {len(rows)} of {count} mails handled"
        time.sleep(0.2)


def test_bundles_by_sender_subject_and_poll_cycle(stack, unique, tmp_path):
    bundling = add_mail_user(f"bundle{unique}", f"pw-{unique}")
    separate = add_mail_user(f"nobundle{unique}", f"pw-{unique}")
    on, off = f"bundle-{unique}", f"nobundle-{unique}"
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(
        "accounts:\n" + account_entry(stack, bundling, on, True) + account_entry(stack, separate, off, False)
    )
    max_, erika = f"Max <max.{unique}@kunde.test>", f"Erika <erika.{unique}@kunde.test>"
    printer, vpn = f"Printer jammed {unique}", f"VPN down {unique}"

    def mail(sender, subject, tag, to):
        return demo_mail(sender, subject, tag, to.address)

    # Cycle n: everything already in the mailboxes when the fetcher first polls.
    append(
        stack, bundling,
        mail(max_, printer, "A1", bundling), mail(max_, printer, "A1b", bundling),
        mail(erika, printer, "B1", bundling), mail(max_, vpn, "C1", bundling),
    )
    append(stack, separate, mail(max_, printer, "Y1", separate), mail(max_, printer, "Y2", separate))

    ticketer_group, classifier_group = f"e2e-ticketer-{unique}", f"e2e-classifier-{unique}"
    place_group_at_end(stack.kafka_bootstrap, ticketer_group, "mail.classified")
    place_group_at_end(stack.kafka_bootstrap, classifier_group, "mail.raw")
    pipeline = subprocess.Popen(
        [sys.executable, "-m", "mailintake", "run", "all", "--accounts", str(accounts)],
        env={
            **os.environ,
            "MAILINTAKE_TICKETER_GROUP_ID": ticketer_group,
            "MAILINTAKE_CLASSIFIER_GROUP_ID": classifier_group,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        rows = wait_for(stack.database_url, on, 4)
        n = rows["A1"].poll_cycle
        assert {rows[t].poll_cycle for t in ("A1", "A1b", "B1", "C1")} == {n}
        # Each next mail goes in right after the previous one was handled: the next cycle.
        for cycles_later, tag in enumerate(["A2", "A3", "A4"], start=1):
            append(stack, bundling, mail(max_, printer, tag, bundling))
            rows = wait_for(stack.database_url, on, 4 + cycles_later)
            assert rows[tag].poll_cycle == n + cycles_later, f"{tag} was fetched in cycle {rows[tag].poll_cycle}, not n+{cycles_later}"
        off_rows = wait_for(stack.database_url, off, 2)
    finally:
        pipeline.send_signal(signal.SIGTERM)
        pipeline.wait(timeout=60)
        delete_group_and_topics(stack.kafka_bootstrap, ticketer_group)

    def outcome(tag):
        return rows[tag].outcome, rows[tag].ticket_number

    first = rows["A1"].ticket_number
    assert outcome("A1") == ("TICKET_CREATED", first)
    assert outcome("A1b") == ("STEP_ADDED", first), "same sender, subject and cycle"
    assert outcome("A2") == ("STEP_ADDED", first), "same sender and subject, the following cycle"
    assert rows["A3"].outcome == "TICKET_CREATED" and rows["A3"].ticket_number != first, "two cycles later"
    assert outcome("A4") == ("STEP_ADDED", rows["A3"].ticket_number), "the cycle after the new ticket's"
    assert rows["B1"].outcome == "TICKET_CREATED" and rows["B1"].ticket_number != first, "another sender"
    assert rows["C1"].outcome == "TICKET_CREATED" and rows["C1"].ticket_number != first, "another subject"
    assert [off_rows[t].outcome for t in ("Y1", "Y2")] == ["TICKET_CREATED", "TICKET_CREATED"], "bundling off"
    assert off_rows["Y1"].ticket_number != off_rows["Y2"].ticket_number
    with engine_for(stack.database_url).connect() as connection:
        assert len(connection.execute(select(Ticket).where(Ticket.source_account_id == on)).all()) == 4
        steps = connection.scalars(
            select(TicketStep.body_text).where(TicketStep.ticket_number == first).order_by(TicketStep.position)
        ).all()
    assert [s.strip() for s in steps] == ["A1", "A1b", "A2"]
