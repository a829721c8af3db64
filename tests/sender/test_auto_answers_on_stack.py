"""Auto-answers on the real stack: queued with the ticket, sent over SMTP, read back over IMAP."""

from __future__ import annotations

import email
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from imapclient import IMAPClient
from pydantic import SecretStr
from sqlalchemy import func, select, update

from mailintake.stack import Endpoints, MailUser, add_mail_user
from services.sender.service import deliver_due
from services.sender.smtp_transport import SmtpTransport
from services.ticketer.auto_answer_outbox import queue_auto_answer
from services.ticketer.auto_answers import AutoAnswer, NoAutoAnswer
from services.ticketer.tables import OutboundMail, Ticket

pytestmark = pytest.mark.stack


def customer_mail(
    sender: str, to: str, subject: str, body: str = "Hello.", extra_headers: dict[str, str] | None = None
) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = f"<{uuid.uuid4().hex}@customer.mailintake.test>"
    for name, value in (extra_headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message.as_bytes()


def read_inbox(stack: Endpoints, user: MailUser, unseen_only: bool = False) -> list[tuple[bytes, EmailMessage]]:
    """The mails in ``user``'s INBOX as (raw bytes, parsed), oldest first; fetching marks them seen."""
    context = ssl.create_default_context(cafile=str(stack.ca_file))
    with IMAPClient(stack.host, port=stack.imaps_port, ssl=True, ssl_context=context, timeout=30) as client:
        client.plain_login(user.name, user.password)
        client.select_folder("INBOX")
        uids = client.search(["UNSEEN"] if unseen_only else ["ALL"])
        fetched = client.fetch(uids, [b"RFC822"]) if uids else {}
    return [
        (fetched[uid][b"RFC822"], email.message_from_bytes(fetched[uid][b"RFC822"], policy=policy.default))
        for uid in sorted(fetched)
    ]


def test_an_auto_answer_arrives_with_its_headers_and_a_reply_to_it_threads_into_the_ticket(stack, desk, customer):
    first = customer_mail(f"Erika Musterfrau <{customer.address}>", desk.address, "Printer jammed", "Paper jam.")
    decision = desk.receive(first)
    number, queued = desk.open_ticket(decision)
    assert isinstance(queued, AutoAnswer)
    assert desk.deliver() >= 1

    [(raw, answer)] = read_inbox(stack, customer)
    [row] = desk.outbox()
    reference = f"[#mi-{number}]"
    assert answer["From"].addresses[0].display_name == "mailintake Support"
    assert answer["From"].addresses[0].addr_spec == desk.address
    assert str(answer["To"]) == customer.address
    assert str(answer["Subject"]) == f"{reference} We received your request: Printer jammed"
    assert str(answer["Auto-Submitted"]) == "auto-replied"
    assert str(answer["X-Auto-Response-Suppress"]) == "All"
    assert str(answer["Message-ID"]) == row.message_id, "the Message-ID sent is the one recorded"
    assert str(answer["In-Reply-To"]) == str(answer["References"]) == decision.message_id
    assert answer.get_content().replace("\r\n", "\n") == (
        f"Hello Erika Musterfrau,\n\nyour request is ticket {reference}.\n\nmailintake Support\n"
    )
    assert (row.status, row.attempts, row.last_smtp_reply) == ("sent", 1, "250 2.0.0 delivered")
    assert row.sent_at is not None

    # The customer answers the auto-answer; their client keeps In-Reply-To but drops
    # the reference from the subject. The classifier's rule finds the ticket through our
    # Message-ID, so the reply becomes a step of that ticket, not a new one.
    reply = customer_mail(
        customer.address, desk.address, "Re: Printer jammed", "Still jammed.",
        {"In-Reply-To": row.message_id, "References": f"{decision.message_id} {row.message_id}"},
    )
    follow_up = desk.receive(reply)
    assert (follow_up.decision.value, follow_up.ticket_reference) == ("FOLLOW_UP", reference)
    # And the reply answering by subject alone, as most clients do, threads the same way.
    by_subject = desk.receive(customer_mail(customer.address, desk.address, f"Re: {answer['Subject']}", "Again."))
    assert (by_subject.decision.value, by_subject.ticket_reference) == ("FOLLOW_UP", reference)


def delivery_report(reporter: str, to: str, bounced: EmailMessage) -> bytes:
    """A DSN as an MTA writes it (RFC 3464): the report, then the bounced mail's headers."""
    boundary = uuid.uuid4().hex
    bounced_headers = "".join(f"{name}: {value}\r\n" for name, value in bounced.items())
    return (
        f"From: Mail Delivery System <{reporter}>\r\nTo: {to}\r\nReturn-Path: <>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{boundary}@mta.mailintake.test>\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mta.mailintake.test\r\n\r\n"
        "Final-Recipient: rfc822; gone@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{bounced_headers}"
        f"--{boundary}--\r\n"
    ).encode()


def test_a_bounce_of_the_auto_answer_becomes_a_note_on_its_ticket(stack, desk, customer):
    from services.ticketer.store import BatchItem, TicketStore
    from services.ticketer.tables import TicketStep

    decision = desk.receive(customer_mail(customer.address, desk.address, "Bounce me"))
    number, queued = desk.open_ticket(decision)
    assert isinstance(queued, AutoAnswer)
    desk.deliver()
    [(_, answer)] = read_inbox(stack, customer)
    bounced = desk.receive(delivery_report(f"mailer-daemon@{stack.user('helpdesk').address.split('@')[1]}", desk.address, answer))
    assert bounced.bounce and bounced.bounce_original_message_id == queued.message_id
    [handled] = TicketStore(desk.engine, desk.ticketer).apply_batch([BatchItem(bounced)])
    assert [(e.kind.value, e.ticket_number) for e in handled.events] == [("STEP_ADDED", number)]
    with desk.engine.connect() as connection:
        steps = connection.execute(
            select(TicketStep.position, TicketStep.direction, TicketStep.message_id)
            .where(TicketStep.ticket_number == number)
            .order_by(TicketStep.position)
        ).all()
    # desk.open_ticket writes no inbound step (the store does); the answer and the note are there.
    assert [(s.direction, s.message_id) for s in steps] == [
        ("outbound", queued.message_id),
        ("note", bounced.message_id),
    ]
    assert len(read_inbox(stack, customer, unseen_only=True)) == 0, "a bounce is never answered"


def test_the_answer_commits_with_its_ticket_or_not_at_all(stack, desk, customer):
    decision = desk.receive(customer_mail(customer.address, desk.address, "Rolled back"))
    with pytest.raises(RuntimeError), desk.engine.begin() as connection:
        number = desk.create_ticket(connection, decision)
        assert isinstance(queue_auto_answer(connection, decision, number, desk.ticketer), AutoAnswer)
        raise RuntimeError("the ticketer fails after queueing, before commit")
    assert desk.outbox() == []
    with desk.engine.connect() as connection:
        assert connection.execute(select(Ticket).where(Ticket.number == number)).first() is None


def test_a_replayed_mail_queues_its_answer_once(stack, desk, customer):
    decision = desk.receive(customer_mail(customer.address, desk.address, "Replay me"))
    number, first = desk.open_ticket(decision)
    # A replay that got past the ledger (or a second store call) hits the dedupe key.
    with desk.engine.begin() as connection:
        again = queue_auto_answer(connection, decision, number, desk.ticketer)
    assert isinstance(first, AutoAnswer)
    assert isinstance(again, NoAutoAnswer) and "already queued" in again.reason
    assert len(desk.outbox()) == 1
    desk.deliver()
    assert len(read_inbox(stack, customer)) == 1


def test_an_autoresponder_ping_pong_stops_at_the_cap(stack, desk, customer):
    """The worst autoresponder: no Auto-Submitted or Precedence header, no In-Reply-To, a
    subject of its own. Every reply of it opens a new ticket; only the per-recipient cap
    (3 per hour here) stops the exchange."""
    cap = desk.ticketer.auto_answer_max_per_recipient
    to_handle = [customer_mail(customer.address, desk.address, "Order 4711")]
    rounds = 0
    while to_handle and rounds < 5 * cap:
        rounds += 1
        for raw in to_handle:
            desk.open_ticket(desk.receive(raw))
        desk.deliver()
        # The autoresponder answers every mail it has not answered yet.
        to_handle = [
            customer_mail(customer.address, desk.address, "I am out of the office until Monday", "Away.")
            for _ in read_inbox(stack, customer, unseen_only=True)
        ]
    assert not to_handle, f"still answering after {rounds} rounds: the cap did not hold"
    assert len(read_inbox(stack, customer)) == cap
    assert len(desk.outbox(customer.address)) == cap
    with desk.engine.connect() as connection:
        tickets = connection.execute(select(Ticket).where(Ticket.source_account_id == desk.account_id)).all()
    assert len(tickets) == cap + 1, "each autoresponder mail is still a ticket; it just gets no answer"


def test_hostile_subjects_and_names_cannot_inject_headers_or_recipients(stack, desk, customer, unique):
    victim = add_mail_user(f"victim{unique}", f"pw-{unique}")
    injection = f"Printer\r\nBcc: {victim.address}\r\nX-Injected: yes\r\n\r\nforged body"
    decision = desk.receive(customer_mail(customer.address, desk.address, "placeholder")).model_copy(
        update={"subject": injection, "sender_name": f"Max\r\nBcc: {victim.address}"}
    )
    desk.sender_name = f"Support\r\nBcc: {victim.address}"
    decision = decision.model_copy(
        update={"sender_identity": decision.sender_identity.model_copy(update={"name": desk.sender_name})}
    )
    number, _ = desk.open_ticket(decision)
    # An address with a line break in it is refused outright: no row, no mail.
    smuggled = desk.receive(customer_mail(customer.address, desk.address, "second")).model_copy(
        update={"sender": f"{customer.address}\r\nRCPT TO:<{victim.address}>"}
    )
    desk.open_ticket(smuggled)
    desk.deliver()

    [(raw, answer)] = read_inbox(stack, customer)
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    header_names = [line.split(b":", 1)[0].lower() for line in header_block.split(b"\r\n") if line[:1] not in (b" ", b"\t")]
    assert header_names.count(b"subject") == 1
    assert b"bcc" not in header_names and b"x-injected" not in header_names
    assert str(answer["Subject"]) == f"[#mi-{number}] We received your request: Printer Bcc: {victim.address} X-Injected: yes forged body"
    assert answer["From"].addresses[0].display_name == f"Support Bcc: {victim.address}"
    assert read_inbox(stack, victim) == []
    assert len(desk.outbox()) == 1


def test_a_refused_login_is_recorded_with_the_servers_reply_and_retried(stack, desk, customer):
    desk.open_ticket(desk.receive(customer_mail(customer.address, desk.address, "Wrong password")))
    wrong = desk.sender.model_copy(update={"smtp_password": SecretStr("not-the-password")})
    desk.deliver(wrong)
    [row] = desk.outbox()
    assert row.last_smtp_reply == "535 5.7.8 Authentication credentials invalid"
    assert (row.status, row.attempts, row.sent_at) == ("pending", 1, None)
    with desk.engine.connect() as connection:
        now = connection.scalar(select(func.localtimestamp()))
    assert row.next_attempt_at > now, "the retry waits for its backoff"
    assert read_inbox(stack, customer) == []

    time.sleep(1.2)  # retry_base_seconds
    desk.deliver()
    [row] = desk.outbox()
    assert (row.status, row.attempts, row.last_smtp_reply) == ("sent", 2, "250 2.0.0 delivered")
    assert len(read_inbox(stack, customer)) == 1


def test_a_refused_recipient_is_given_up_at_once(stack, desk, unique):
    nobody = f"nobody{unique}@mailintake.test"  # no such mailbox: the relay answers 550
    desk.open_ticket(desk.receive(customer_mail(nobody, desk.address, "To nobody")))
    desk.deliver()
    [row] = desk.outbox()
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_smtp_reply == f"550 5.1.1 no mailbox {nobody}"


def test_two_sender_replicas_send_each_mail_once(stack, desk, customer):
    count = 12
    desk.ticketer = desk.ticketer.model_copy(update={"auto_answer_max_per_recipient": count})
    for n in range(count):
        desk.open_ticket(desk.receive(customer_mail(customer.address, desk.address, f"Request {n}")))
    start = threading.Barrier(2)

    def replica() -> None:
        start.wait()
        deliver_due(desk.engine, desk.sender, SmtpTransport(desk.sender))

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    rows = desk.outbox()
    assert [(r.status, r.attempts) for r in rows] == [("sent", 1)] * count
    received = [str(message["Message-ID"]) for _, message in read_inbox(stack, customer)]
    assert sorted(received) == sorted(r.message_id for r in rows), "every mail arrived exactly once"


def test_mailintake_run_sender_delivers_as_its_own_process(stack, desk, customer):
    desk.open_ticket(desk.receive(customer_mail(customer.address, desk.address, "Via the process")))
    process = subprocess.Popen(
        [sys.executable, "-m", "mailintake", "run", "sender"],
        env={
            **os.environ,
            "MAILINTAKE_SENDER_DATABASE_URL": desk.database_url,
            "MAILINTAKE_SENDER_POLL_INTERVAL_SECONDS": "0.2",
        },
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and desk.outbox()[0].status != "sent":
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert desk.outbox()[0].status == "sent", output[-3000:]
    assert process.returncode == 0, output[-3000:]
    assert len(read_inbox(stack, customer)) == 1
    assert stack.user("helpdesk").password not in output, "the SMTP password reached the logs"


def test_the_cap_counts_only_answers_inside_the_window(stack, desk, customer):
    cap = desk.ticketer.auto_answer_max_per_recipient
    for n in range(cap):
        desk.open_ticket(desk.receive(customer_mail(customer.address, desk.address, f"Within {n}")))
    _, capped = desk.open_ticket(desk.receive(customer_mail(customer.address, desk.address, "One too many")))
    assert isinstance(capped, NoAutoAnswer) and f"already got {cap} auto-answers" in capped.reason
    # An hour later (the window) the earlier answers no longer count.
    with desk.engine.begin() as connection:
        connection.execute(
            update(OutboundMail)
            .where(OutboundMail.recipient == customer.address)
            .values(created_at=func.localtimestamp() - timedelta(seconds=desk.ticketer.auto_answer_window_seconds + 1))
        )
    _, later = desk.open_ticket(desk.receive(customer_mail(customer.address, desk.address, "Next day")))
    assert isinstance(later, AutoAnswer)
