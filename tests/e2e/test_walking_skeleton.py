"""A real mail from a Dovecot mailbox through the three services into PostgreSQL.

IMAP APPEND -> fetcher -> mail.raw -> classifier -> mail.classified -> ticketer ->
tickets + ticket.events, each service a separate process, on the real local stack.
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
from kafka import KafkaConsumer
from sqlalchemy import select

from mailintake.contracts.records import TicketEventKind, decode_record
from mailintake.database import engine_for
from mailintake.demo import demo_mail, wait_for_tickets
from mailintake.stack import add_mail_user
from services.ticketer.tables import ProcessedMail, Ticket, TicketStep
from tests.ticketer.running_ticketer import delete_group_and_topics, place_group_at_end

pytestmark = pytest.mark.stack


def imap(stack, user):
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    client = IMAPClient(stack.host, port=stack.imaps_port, ssl=True, ssl_context=context, timeout=30)
    client.plain_login(user.name, user.password)
    return client


def write_accounts(path, stack, user, account_id):
    # The account names a category and a priority: they must exist before it is imported.
    reference_data = path.with_name("reference-data.yaml")
    reference_data.write_text("categories:\n  - name: Hardware\npriorities:\n  - name: high\n")
    subprocess.run([sys.executable, "-m", "mailintake", "refdata", "import", str(reference_data)], check=True, capture_output=True)
    path.write_text(
        f"""accounts:
  - id: {account_id}
    name: E2E {user.address}
    host: {stack.host}
    port: {stack.imaps_port}
    security: tls
    ca_file: {stack.ca_file}
    username: {user.name}
    password: {user.password}
    poll_interval_seconds: 5
    ticket_options:
      category: Hardware
      priority: high
      create_user_from_local_part: true
"""
    )


def own_groups(stack, unique):
    """Consumer groups of this test only, placed at the topics' ends: the shared default
    groups may have a backlog from other sessions that would delay these mails."""
    groups = {"MAILINTAKE_CLASSIFIER_GROUP_ID": f"e2e-classifier-{unique}", "MAILINTAKE_TICKETER_GROUP_ID": f"e2e-ticketer-{unique}"}
    place_group_at_end(stack.kafka_bootstrap, groups["MAILINTAKE_CLASSIFIER_GROUP_ID"], "mail.raw")
    place_group_at_end(stack.kafka_bootstrap, groups["MAILINTAKE_TICKETER_GROUP_ID"], "mail.classified")
    return groups


def ticket_events(bootstrap, account_id, want, timeout=60):
    """The account's distinct events: a replay re-emits an event with its id, readers deduplicate."""
    consumer = KafkaConsumer(
        "ticket.events", bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    found, deadline = {}, time.monotonic() + timeout
    try:
        while len(found) < want and time.monotonic() < deadline:
            for message in consumer:
                event = decode_record("ticket.events", message.value)
                if event.account_id == account_id:
                    assert found.setdefault(event.event_id, event) == event, "a re-emitted event changed"
    finally:
        consumer.close()
    return list(found.values())


def test_mail_becomes_a_ticket_and_a_reply_becomes_its_second_step(stack, unique, tmp_path):
    user = add_mail_user(f"e2e{unique}", f"pw-{unique}-Ä")
    account_id = f"e2e-{unique}"
    accounts = tmp_path / "accounts.yaml"
    write_accounts(accounts, stack, user, account_id)
    sender = f"max.mustermann.{unique}@example.com"  # unknown, so the account's rule creates the user
    first = demo_mail(f"Max Mustermann <Max.Mustermann.{unique}@Example.com>", f"Printer jammed {unique}", "Paper jam.", user.address)
    with imap(stack, user) as client:
        client.append("INBOX", first)

    engine = engine_for(stack.database_url)
    pipeline = subprocess.Popen(
        [sys.executable, "-m", "mailintake", "run", "all", "--accounts", str(accounts)],
        env={
            **os.environ,
            **own_groups(stack, unique),
            "MAILINTAKE_TICKETER_INSTANCE_ID": "mi",
            "MAILINTAKE_CLASSIFIER_INSTANCE_ID": "mi",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for_tickets(stack.database_url, account_id, 1, timeout=120) == 1
        with engine.connect() as connection:
            ticket = connection.execute(select(Ticket).where(Ticket.source_account_id == account_id)).one()
        assert ticket.subject == f"Printer jammed {unique}"
        assert ticket.requester == sender
        assert (ticket.category, ticket.priority, ticket.status) == ("Hardware", "high", "open")
        assert ticket.reference == f"[#mi-{ticket.number}]"

        # The fetcher flags only after Kafka acknowledged: by now the mail is \Seen.
        with imap(stack, user) as client:
            client.select_folder("INBOX", readonly=True)
            assert client.search(["SEEN"]) == client.search(["ALL"]) != []
            reply = demo_mail(
                sender, f"Re: Printer jammed {unique} {ticket.reference}", "Still jammed.", user.address
            )
            client.append("INBOX", reply)

        assert wait_for_tickets(stack.database_url, account_id, 2, timeout=120) == 2
        with engine.connect() as connection:
            steps = connection.execute(
                select(TicketStep).where(TicketStep.ticket_number == ticket.number).order_by(TicketStep.position)
            ).all()
            tickets = connection.execute(select(Ticket).where(Ticket.source_account_id == account_id)).all()
            ledger = connection.execute(select(ProcessedMail).where(ProcessedMail.account_id == account_id)).all()
        assert len(tickets) == 1, "the reply must not open a second ticket"
        assert [s.body_text.strip() for s in steps] == ["Paper jam.", "Still jammed."]
        assert sorted(row.outcome for row in ledger) == ["STEP_ADDED", "TICKET_CREATED"]

        events = ticket_events(stack.kafka_bootstrap, account_id, want=3)
        # The unknown sender became a user (the account creates users from the local part).
        assert sorted(e.kind for e in events) == sorted(
            [TicketEventKind.USER_CREATED, TicketEventKind.TICKET_CREATED, TicketEventKind.STEP_ADDED]
        )
        assert {e.ticket_number for e in events} == {ticket.number}

        shown = subprocess.run(
            [sys.executable, "-m", "mailintake", "tickets", "show", str(ticket.number)],
            capture_output=True, text=True, check=True,
        ).stdout
        assert f"Printer jammed {unique}" in shown and "Still jammed." in shown
        assert shown.index("step 1") < shown.index("step 2")
        listed = subprocess.run(
            [sys.executable, "-m", "mailintake", "tickets", "list", "--account", account_id],
            capture_output=True, text=True, check=True,
        ).stdout.splitlines()
        # The header and this account's one ticket; the shared database holds other tests' tickets.
        assert len(listed) == 2 and listed[1].split()[0] == str(ticket.number), listed
    finally:
        pipeline.send_signal(signal.SIGTERM)
        output, _ = pipeline.communicate(timeout=60)
        delete_group_and_topics(stack.kafka_bootstrap, f"e2e-ticketer-{unique}")
    assert pipeline.returncode == 0, output[-3000:]
    assert user.password not in output, "a password reached the logs"


def dead_letters(bootstrap, want_value_containing, timeout=90):
    consumer = KafkaConsumer(
        "mail.dlq", bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for message in consumer:
                letter = decode_record("mail.dlq", message.value)
                if letter.original_value and want_value_containing in letter.original_value:
                    return letter
    finally:
        consumer.close()
    return None


def test_unreadable_mail_goes_to_the_dlq_with_its_source_and_reason(stack, unique, tmp_path):
    user = add_mail_user(f"dlq{unique}", f"pw-{unique}")
    account_id = f"dlq-{unique}"
    accounts = tmp_path / "accounts.yaml"
    write_accounts(accounts, stack, user, account_id)
    marker = f"no-sender-{unique}"
    with imap(stack, user) as client:
        client.append("INBOX", f"Subject: {marker}\r\nTo: {user.address}\r\n\r\nWho sent this?\r\n".encode())
        client.append("INBOX", demo_mail("ok@example.com", f"fine {unique}", "fine", user.address))
    pipeline = subprocess.Popen(
        [sys.executable, "-m", "mailintake", "run", "all", "--accounts", str(accounts)],
        env={**os.environ, **own_groups(stack, unique)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        letter = dead_letters(stack.kafka_bootstrap, marker.encode())
        assert letter is not None, "the unreadable mail never reached mail.dlq"
        assert (letter.service, letter.source_topic) == ("classifier", "mail.raw")
        assert letter.source_offset >= 0 and letter.source_partition >= 0
        assert letter.reason == "mail has no sender address in From, Sender or Return-Path"
        assert letter.exception_type == "mailintake.contracts.errors.InvalidMessage"
        # The good mail behind it was not held up, and the bad one did not become a ticket.
        assert wait_for_tickets(stack.database_url, account_id, 1, timeout=60) == 1
        time.sleep(2)
        assert wait_for_tickets(stack.database_url, account_id, 2, timeout=0) == 1
    finally:
        pipeline.send_signal(signal.SIGTERM)
        pipeline.wait(timeout=60)
        delete_group_and_topics(stack.kafka_bootstrap, f"e2e-ticketer-{unique}")
