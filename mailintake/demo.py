"""`mailintake demo`: the pipeline on the local stack, with a demo mailbox.

It puts a few realistic mails into the ``demo`` mailbox over IMAP APPEND, writes an
accounts file for that mailbox, runs the three services as separate processes and
prints the tickets once every demo mail has become one.
"""

from __future__ import annotations

import ssl
import time
import uuid
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from datetime import UTC, datetime
from pathlib import Path

import yaml
from imapclient import IMAPClient

from mailintake.stack import Endpoints

DEMO_MAILS = (
    ("Max Mustermann <max.mustermann@example.com>", "Printer on floor 3 is jammed again",
     "Hello,\n\nthe printer next to room 3.14 reports a paper jam.\n\nMax"),
    ("Erika Musterfrau <erika@example.org>", "VPN: Verbindung bricht ständig ab",
     "Hallo,\n\nseit heute Morgen bricht die VPN-Verbindung alle paar Minuten ab.\n\nErika"),
    ("Monitoring <alerts@monitoring.example.net>", "Disk usage above 90% on db-02",
     "Host db-02: /var at 93%."),
)


def demo_mail(sender: str, subject: str, body: str, to: str, message_id: str | None = None) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id or make_msgid(idstring=uuid.uuid4().hex[:12], domain="demo.mailintake.test")
    message.set_content(body)
    return message.as_bytes()


def append_mails(endpoints: Endpoints, user: str, mails: list[bytes], folder: str = "INBOX") -> None:
    """Deliver ``mails`` into ``user``'s folder over IMAPS (what an MTA would have done)."""
    mailbox = endpoints.user(user)
    context = ssl.create_default_context(cafile=str(endpoints.ca_file))
    with IMAPClient(endpoints.host, port=endpoints.imaps_port, ssl=True, ssl_context=context, timeout=30) as client:
        client.plain_login(mailbox.name, mailbox.password)
        for raw in mails:
            client.append(folder, raw)


def demo_account_id(user: str) -> str:
    """The id of the demo account that reads ``user``'s mailbox."""
    return f"demo-{user}"


def write_accounts_file(endpoints: Endpoints, path: Path, user: str, poll_interval_seconds: int = 5) -> Path:
    """An accounts file for ``user``'s mailbox on the stack's IMAPS port."""
    mailbox = endpoints.user(user)
    account = {
        "id": demo_account_id(user),
        "name": f"Demo mailbox {mailbox.address}",
        "protocol": "imap",
        "host": endpoints.host,
        "port": endpoints.imaps_port,
        "security": "tls",
        "ca_file": str(endpoints.ca_file),
        "username": mailbox.name,
        "password": mailbox.password,
        "folder": "INBOX",
        "poll_interval_seconds": poll_interval_seconds,
        "after_fetch": "mark_seen",
        "sender": {"name": "mailintake demo desk", "address": mailbox.address},
        # Demo senders are unknown: they become users, or the ticketer would reject their mails.
        "ticket_options": {
            "auto_bundle": True,
            "create_user_from_local_part": True,
            "category": None,
            "priority": None,
            "resource": None,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"accounts": [account]}, sort_keys=False, allow_unicode=True), encoding="utf-8")
    path.chmod(0o600)  # it holds a password
    return path


def seed(endpoints: Endpoints, user: str = "demo") -> int:
    to = endpoints.user(user).address
    mails = [demo_mail(sender, subject, body, to) for sender, subject, body in DEMO_MAILS]
    append_mails(endpoints, user, mails)
    return len(mails)


def wait_for_tickets(database_url: str, account_id: str, expected: int, timeout: float) -> int:
    """Wait until ``expected`` mails of ``account_id`` have been handled; return how many were."""
    from sqlalchemy import func, select

    from mailintake.database import engine_for
    from services.ticketer.tables import ProcessedMail

    engine = engine_for(database_url)
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as connection:
            handled = connection.scalar(
                select(func.count()).select_from(ProcessedMail).where(ProcessedMail.account_id == account_id)
            )
        if handled >= expected or time.monotonic() >= deadline:
            return handled
        time.sleep(0.5)
