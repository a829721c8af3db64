"""A help desk on the real stack for the auto-answer tests.

Mail goes the way production mail goes, minus Kafka: raw bytes -> the classifier's
core -> a ticket and its auto-answer in one PostgreSQL transaction -> the sender over
the stack's SMTP relay (STARTTLS, AUTH as ``helpdesk``) -> Dovecot, read back over IMAPS.

The ticket is inserted here rather than through the ticketer's store; the transaction
makes the same ``queue_auto_answer`` call the store makes.

The tests run in a PostgreSQL schema of their own: any sender on the stack claims every
due row of its database, so a ``./dev run`` in another terminal, or another test
session's ``run all``, would otherwise deliver these tests' mail under their feet.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, insert, select

from mailintake.contracts.records import MailClassified, MailRaw, Protocol, SenderIdentity, TicketOptions
from mailintake.database import engine_for
from mailintake.stack import Endpoints, MailUser, add_mail_user
from services.classifier.core import Classifier, classify
from services.classifier.settings import ClassifierSettings
from services.sender.service import deliver_due
from services.sender.settings import SenderSettings
from services.sender.smtp_transport import SmtpTransport
from services.ticketer.auto_answer_outbox import import_templates, queue_auto_answer
from services.ticketer.auto_answer_templates import TemplateText
from services.ticketer.settings import TicketerSettings
from services.ticketer.core import format_reference
from services.ticketer.tables import TICKET_NUMBER_SEQUENCE, OutboundMail, Ticket
from tests.database_schemas import migrated_schema

TEMPLATE_SUBJECT = "We received your request: {{ subject }}"
TEMPLATE_BODY = "Hello {{ requester_name or requester }},\n\nyour request is ticket {{ reference }}.\n\n{{ account_name }}\n"


@dataclass
class HelpDesk:
    """One help-desk account on the stack, with its own template and sender identity."""

    stack: Endpoints
    database_url: str
    unique: str
    ticketer: TicketerSettings
    sender: SenderSettings
    sender_name: str = "mailintake Support"
    mails: int = field(default=0)

    @property
    def engine(self) -> Engine:
        return engine_for(self.database_url)

    @property
    def account_id(self) -> str:
        return f"aa-{self.unique}"

    @property
    def template_name(self) -> str:
        return f"tpl-{self.unique}"

    @property
    def address(self) -> str:
        return self.stack.user("helpdesk").address

    def receive(self, raw: bytes) -> MailClassified:
        """The classifier's decision on ``raw`` arriving in this desk's mailbox."""
        self.mails += 1
        mail = MailRaw(
            account_id=self.account_id,
            account_name=f"Auto-answer test {self.unique}",
            protocol=Protocol.IMAP,
            source_id=f"INBOX:1:{self.unique}:{self.mails}",
            poll_cycle=self.mails,
            poll_interval_seconds=60,
            fetched_at=datetime.now(UTC),
            size=len(raw),
            raw=raw,
            sender_identity=SenderIdentity(name=self.sender_name, address=self.address),
            ticket_options=TicketOptions(auto_answer_template=self.template_name),
        )
        return classify(mail, raw, Classifier.from_settings(ClassifierSettings()))

    def create_ticket(self, connection: Connection, decision: MailClassified) -> int:
        number = connection.scalar(TICKET_NUMBER_SEQUENCE.next_value())
        connection.execute(
            insert(Ticket).values(
                number=number,
                reference=format_reference(self.ticketer.instance_id, number),
                subject=decision.subject,
                requester=decision.sender,
                source_account_id=decision.account_id,
            )
        )
        return number

    def open_ticket(self, decision: MailClassified):
        """Open the ticket ``decision`` asks for and queue its auto-answer, in one
        transaction; return the ticket's number and what ``queue_auto_answer`` returned."""
        assert decision.decision.value == "NEW_TICKET", decision
        with self.engine.begin() as connection:
            number = self.create_ticket(connection, decision)
            queued = queue_auto_answer(connection, decision, number, self.ticketer)
        return number, queued

    def deliver(self, sender: SenderSettings | None = None) -> int:
        settings = sender or self.sender
        return deliver_due(self.engine, settings, SmtpTransport(settings))

    def outbox(self, recipient: str | None = None) -> list:
        query = select(OutboundMail).where(OutboundMail.account_id == self.account_id).order_by(OutboundMail.id)
        if recipient:
            query = query.where(OutboundMail.recipient == recipient)
        with self.engine.connect() as connection:
            return list(connection.execute(query))


@pytest.fixture(scope="session")
def outbox_database(stack: Endpoints) -> Iterator[str]:
    """The URL of a fresh schema, migrated to head, that only these tests use."""
    with migrated_schema(stack.database_url, "sender_tests") as url:
        yield url


@pytest.fixture
def desk(stack: Endpoints, outbox_database: str, unique: str) -> HelpDesk:
    ticketer = TicketerSettings(
        database_url=outbox_database,
        auto_answers_enabled=True,
        auto_answer_max_per_recipient=3,
        auto_answer_window_seconds=3600,
    )
    # Everything else from the environment the stack fixture exported (local_environment).
    sender = SenderSettings(database_url=outbox_database, retry_base_seconds=1.0, poll_interval_seconds=0.2)
    help_desk = HelpDesk(stack, outbox_database, unique, ticketer, sender)
    with help_desk.engine.begin() as connection:
        import_templates(connection, [TemplateText(help_desk.template_name, TEMPLATE_SUBJECT, TEMPLATE_BODY)])
    return help_desk


@pytest.fixture
def customer(unique: str) -> MailUser:
    return add_mail_user(f"cust{unique}", f"pw-{unique}")
