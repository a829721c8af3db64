"""Fixtures for the fetcher's tests on the real stack: mailbox users, accounts, a
Fetcher wired to the stack, what landed on ``mail.raw``, and fresh loopback addresses.

Dovecot delays every further failed login from one client address (0.5 s, 4.5 s,
8.5 s, ...), and treats a client on its own address (127.0.0.1) as secure. A fresh
address from 127.0.0.0/8 per test keeps wrong-password tests fast and lets a test look
like a remote client.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from imapclient import IMAPClient
from kafka import KafkaConsumer, TopicPartition

from mailintake.contracts.records import MailRaw, decode_record
from mailintake.stack import Stack
from mailintake.stack.layout import StackLayout
from mailintake.stack.tls import ensure_certificates
from services.fetcher.account import Account
from services.fetcher.mail_raw_producer import MailRawProducer
from services.fetcher.service import Fetcher
from services.fetcher.settings import FetcherSettings

TOPIC = "mail.raw"


@pytest.fixture
def loopback_address():
    """Call for a loopback address no other test (or earlier run) has used, never 127.0.0.1."""
    rng = random.SystemRandom()
    return lambda: f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(2, 254)}"


@pytest.fixture
def account_for(stack):
    """Call with a mail user (and Account fields) for an account on the port that fits protocol and security."""
    ports = {
        ("imap", "tls"): stack.imaps_port,
        ("imap", "starttls"): stack.imap_port,
        ("imap", "none"): stack.imap_port,
        ("pop3", "tls"): stack.pop3s_port,
        ("pop3", "starttls"): stack.pop3_port,
        ("pop3", "none"): stack.pop3_port,
    }

    def build(user, *, protocol: str = "imap", security: str = "tls", **fields) -> Account:
        values = {
            "id": f"{protocol}-{security}-{user.name}",
            "name": f"Test {user.address}",
            "protocol": protocol,
            "host": stack.host,
            "port": ports[(protocol, security)],
            "security": security,
            "ca_file": stack.ca_file,
            "username": user.name,
            "password": user.password,
            "poll_interval_seconds": 5,
        }
        return Account(**(values | fields))

    return build


@pytest.fixture
def imap_client(stack):
    """Call with a mail user for the test's own IMAPS session, to put mails in and look at them afterwards."""

    @contextmanager
    def session(user) -> Iterator[IMAPClient]:
        context = ssl.create_default_context(cafile=str(stack.ca_file))
        with IMAPClient(stack.host, port=stack.imaps_port, ssl=True, ssl_context=context, timeout=10) as client:
            client.plain_login(user.name, user.password)
            yield client

    return session


@pytest.fixture(scope="session")
def imap_user(stack):
    """One mailbox for the IMAP tests, which keep apart by folder: adding a user costs up to a second."""
    import uuid

    from mailintake.stack import add_mail_user

    suffix = uuid.uuid4().hex[:10]
    return add_mail_user(f"imapt{suffix}", f"pw-{suffix}")


@pytest.fixture
def imap_folder(imap_user, imap_client, unique):
    """A new, empty folder of ``imap_user`` for this test alone."""
    name = f"T{unique}"
    with imap_client(imap_user) as client:
        client.create_folder(name)
    return name


@pytest.fixture(scope="session")
def kafka_producer(stack):
    """One idempotent acks=all producer for the session's fetchers (each would cost a connect)."""
    producer = MailRawProducer(stack.kafka_bootstrap, client_id="fetcher-tests", max_request_bytes=2 * 1024 * 1024)
    yield producer
    producer.close(timeout=10)


@pytest.fixture
def fetcher_for(stack, kafka_producer):
    """Call with accounts (and Fetcher keywords) for a Fetcher on the stack with short timeouts."""
    made: list[Fetcher] = []

    def make(*accounts: Account, producer=None, source_address=None, bearer_tokens=None, on_rotated_refresh_token=None,
             **settings) -> Fetcher:
        fetcher = Fetcher(
            FetcherSettings(
                kafka_bootstrap_servers=stack.kafka_bootstrap,
                database_url=stack.database_url,
                **({"timeout_seconds": 10.0} | settings),
            ),
            list(accounts),
            producer=producer or kafka_producer,
            source_address=source_address,
            bearer_tokens=bearer_tokens,
            on_rotated_refresh_token=on_rotated_refresh_token,
        )
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        fetcher.close()


class MailRawLog:
    """What was produced to ``mail.raw`` since the fixture started."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._partitions = [TopicPartition(TOPIC, p) for p in sorted(self._consumer.partitions_for_topic(TOPIC))]
        self._consumer.assign(self._partitions)
        self._start = self._consumer.end_offsets(self._partitions)

    def records(self, account_id: str) -> list[MailRaw]:
        """Every record of ``account_id`` produced so far (the fetcher waited for the acks), in order."""
        return [record for _, record in self._placed(account_id)]

    def partitions_of(self, account_id: str) -> set[int]:
        """The partitions the records of ``account_id`` went to."""
        return {partition for partition, _ in self._placed(account_id)}

    def _placed(self, account_id: str) -> list[tuple[int, MailRaw]]:
        end = self._consumer.end_offsets(self._partitions)
        for partition in self._partitions:
            self._consumer.seek(partition, self._start[partition])
        found: list[tuple[int, MailRaw]] = []
        while any(self._consumer.position(p) < end[p] for p in self._partitions):
            for batch in self._consumer.poll(timeout_ms=1000).values():
                for message in batch:
                    if message.offset < end[TopicPartition(message.topic, message.partition)]:
                        record = decode_record(TOPIC, message.value)
                        if record.account_id == account_id:
                            found.append((message.partition, record))
        return found

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def mail_raw(stack):
    log = MailRawLog(stack.kafka_bootstrap)
    yield log
    log.close()


@pytest.fixture(scope="session")
def untrusted_ca_file(tmp_path_factory):
    """A CA certificate that signed nothing the stack serves: trusting only it must fail the handshake."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Throwaway test CA")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("untrusted-ca") / "ca.pem"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="session")
def stack_tls():
    """The stack's CA and its server certificate (created if missing; no server needs to run)."""
    layout = StackLayout.of(Stack().settings)
    ensure_certificates(layout.ca_cert, layout.ca_key, layout.server_cert, layout.server_key)
    return layout
