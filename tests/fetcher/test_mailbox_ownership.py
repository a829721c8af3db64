"""Mailbox ownership through Kafka's consumer group, with real fetcher processes.

Three ``mailintake run fetcher`` replicas share twelve Dovecot mailboxes: one replica
alone, then three (a rebalance), then one killed with SIGKILL, then one stopped with
SIGTERM. Mail keeps arriving in every phase. Every mail reaches ``mail.raw`` exactly
once, the killed replica's mailboxes are polled again within one session timeout plus
one interval, and Dovecot's own log shows no mailbox with two sessions at once.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from kafka import KafkaProducer

from mailintake.contracts import get_topic, record_key
from mailintake.contracts.records import AccountNotice, encode_record
from mailintake.database import engine_for
from mailintake.runtime.settings import load_settings
from mailintake.stack import add_mail_user
from services.fetcher.account_store import AccountStore
from services.fetcher.mailbox_ownership import TOPIC, account_partition
from services.fetcher.password_cipher import cipher_from_settings
from services.fetcher.settings import AccountEncryptionSettings
from tests.database_schemas import migrated_schema
from tests.peers.dovecot_sessions import overlapping, sessions
from tests.peers.slow_link import SlowLink
from tests.ticketer.running_ticketer import free_port

pytestmark = pytest.mark.stack

MAILBOXES = 12
PER_PHASE = 3
SESSION_TIMEOUT = 6
INTERVAL = 5


def test_account_partition_is_the_partition_kafka_gives_the_key(stack):
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, acks="all")
    try:
        partitions = get_topic(TOPIC).partitions
        for n in range(40):
            notice = AccountNotice(account_id=f"acct-{uuid.uuid4().hex[:8]}-{n}", changed_at=datetime.now(UTC))
            sent = producer.send(TOPIC, key=record_key(notice), value=encode_record(TOPIC, notice)).get(30)
            assert sent.partition == account_partition(notice.account_id, partitions)
    finally:
        producer.close()


def account_ids_on_partitions(unique: str, count: int) -> list[str]:
    """``count`` account ids whose ``accounts`` partitions are 0, 1, ..., count - 1.

    The replicas share the partitions round robin (partition p to the replica p modulo
    their number, in member order), and the test asks that every replica polls
    something. With ids on random partitions a replica was left without an account in
    about one run of forty (seen in CI: none of twelve accounts on the eight partitions of
    one replica of three). Accounts on partitions 0-11 give each of three replicas four,
    and each of two six.
    """
    partitions = get_topic(TOPIC).partitions
    ids = []
    for wanted in range(count):
        ids.append(next(
            candidate for n in range(100_000)
            if account_partition(candidate := f"own-{unique}-{wanted}-{n}", partitions) == wanted
        ))
    return ids


class Replica:
    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailintake", "run", "fetcher"],
            env=env | {"MAILINTAKE_FETCHER_HTTP_PORT": str(free_port())},
            stdout=self.log_path.open("a"),
            stderr=subprocess.STDOUT,
        )

    def events(self, event: str) -> list[dict]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"{event}"' in line:
                found.append(json.loads(line))
        return found

    def owned_partitions(self) -> set[int]:
        owned: set[int] = set()
        for line in self.log_path.read_text(errors="replace").splitlines():
            # Eager protocol: each revocation empties the replica, each assignment refills it.
            if '"ownership.assigned"' in line:
                owned = set(json.loads(line)["partitions"])
            elif '"ownership.revoked"' in line:
                owned = set()
        return owned


def new_mail(user, phase: int, n: int) -> tuple[str, bytes]:
    message = EmailMessage()
    message_id = f"<{uuid.uuid4().hex}@ownership.test>"
    message["From"] = "customer@ownership.test"
    message["To"] = user.address
    message["Subject"] = f"phase {phase} mail {n}"
    message["Message-ID"] = message_id
    message.set_content("Hello.")
    return message_id, message.as_bytes()


def test_replicas_share_mailboxes_hand_them_over_and_never_poll_one_twice_at_once(
    stack, unique, tmp_path, account_for, mail_raw
):
    users = [add_mail_user(f"own{unique}{i}", f"pw-{unique}-{i}") for i in range(MAILBOXES)]
    ids = account_ids_on_partitions(unique, MAILBOXES)
    accounts = [account_for(u, id=account_id, poll_interval_seconds=INTERVAL) for u, account_id in zip(users, ids)]
    sent: dict[str, str] = {}  # Message-ID -> account id

    def deliver(phase: int) -> None:
        # Through the stack's SMTP server and dovecot-lda, as mail arrives: an IMAP APPEND
        # would open sessions of the mailbox's user and blur the session check below.
        with smtplib.SMTP(stack.host, stack.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=ssl.create_default_context(cafile=str(stack.ca_file)))
            smtp.login(users[0].name, users[0].password)
            for user, account in zip(users, accounts):
                for n in range(PER_PHASE):
                    message_id, raw = new_mail(user, phase, n)
                    smtp.sendmail("customer@ownership.test", [user.address], raw)
                    sent[message_id] = account.id

    def produced() -> Counter:
        return Counter(r.message_id for a in accounts for r in mail_raw.records(a.id))

    def wait_all_produced(timeout: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if set(sent) <= set(produced()):
                return time.monotonic() - started
            time.sleep(0.5)
        missing = set(sent) - set(produced())
        raise AssertionError(f"{len(missing)} of {len(sent)} mails never reached mail.raw")

    since = datetime.now()
    with migrated_schema(stack.database_url, "ownership_tests") as database_url:
        cipher = cipher_from_settings(load_settings(AccountEncryptionSettings))
        AccountStore(engine_for(database_url), cipher).import_accounts(accounts)
        env = dict(os.environ) | {
            "MAILINTAKE_FETCHER_DATABASE_URL": database_url,
            "MAILINTAKE_FETCHER_GROUP_ID": f"fetchers-{unique}",
            "MAILINTAKE_FETCHER_SESSION_TIMEOUT_SECONDS": str(SESSION_TIMEOUT),
            "MAILINTAKE_FETCHER_TIMEOUT_SECONDS": "10",
            "MAILINTAKE_FETCHER_MAILBOX_OWNERSHIP": "consumer_group",
        }
        replicas: list[Replica] = []
        try:
            # One replica owns every mailbox.
            replicas.append(Replica("a", env, tmp_path))
            deliver(1)
            wait_all_produced(60)
            # Two more join: the mailboxes are shared out.
            replicas += [Replica("b", env, tmp_path), Replica("c", env, tmp_path)]
            deadline = time.monotonic() + 60
            while not all(r.owned_partitions() for r in replicas) and time.monotonic() < deadline:
                time.sleep(0.5)
            shares = [r.owned_partitions() for r in replicas]
            assert all(shares), f"a replica owns nothing: {shares}"
            assert set().union(*shares) == set(range(get_topic(TOPIC).partitions))
            assert sum(len(s) for s in shares) == get_topic(TOPIC).partitions, "a partition has two owners"
            deliver(2)
            wait_all_produced(60)
            # One dies without leaving the group: the others take its mailboxes.
            replicas[1].process.kill()
            replicas[1].process.wait(10)
            deliver(3)
            recovered = wait_all_produced(60)
            print(f"mails of the killed replica's mailboxes polled again after {recovered:.1f}s")
            assert recovered <= SESSION_TIMEOUT + INTERVAL + 10
            # One leaves with SIGTERM: its mailboxes move at once.
            replicas[2].process.send_signal(signal.SIGTERM)
            assert replicas[2].process.wait(60) == 0, replicas[2].log_path.read_text()[-3000:]
            deliver(4)
            wait_all_produced(60)
        finally:
            for replica in replicas:
                if replica.process.poll() is None:
                    replica.process.send_signal(signal.SIGTERM)
                    replica.process.wait(60)

    counts = produced()
    assert {m for m, n in counts.items() if n > 1} == set(), "a mail reached mail.raw twice"
    assert set(counts) == set(sent)
    polled_by = {r.name: {e["account_id"] for e in r.events("poll.done")} for r in replicas}
    assert all(polled_by.values()), f"a replica polled nothing: {polled_by}"
    names = {u.name for u in users}
    found = [s for s in sessions(stack.state_dir / "logs" / "dovecot.log", since) if s.user in names]
    assert len(found) >= MAILBOXES * 4
    assert overlapping(found) == [], "a mailbox had two sessions at once"


def test_a_rebalance_waits_until_the_poll_of_a_revoked_mailbox_has_stopped(stack, unique, account_for, imap_client):
    """A member joining mid-poll gets partitions only after this replica's session of the
    mailbox ended: the revocation waited for the poll, which stopped at a chunk boundary."""
    import threading

    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener

    from mailintake.runtime.http_endpoint import Health
    from services.fetcher.mailbox_ownership import MailboxOwnership
    from services.fetcher.service import Fetcher
    from services.fetcher.settings import FetcherSettings

    user = add_mail_user(f"big{unique}", f"pw-{unique}")
    body = "x" * 60_000
    with imap_client(user) as client:
        client.multiappend("INBOX", [new_mail(user, 1, n)[1] + body.encode() for n in range(80)])
    # 4.8 MB at 1 MB/s: the poll's one chunk lasts about five seconds, longer than it
    # takes the group to notice the new member (a heartbeat, 2 s) and rebalance.
    link = SlowLink((stack.host, stack.imaps_port), 1_000_000)
    account = account_for(user, id=f"big-{unique}", port=link.port)
    group = f"fetchers-{unique}"
    settings = FetcherSettings(
        kafka_bootstrap_servers=stack.kafka_bootstrap, database_url=stack.database_url, fetch_chunk=100, timeout_seconds=20
    )
    ownership = MailboxOwnership(stack.kafka_bootstrap, group, session_timeout_seconds=6, release_timeout_seconds=40)
    fetcher = Fetcher(settings, [account], ownership=ownership)
    stop = threading.Event()
    since = datetime.now()
    runner = threading.Thread(target=fetcher.run, args=(Health(), stop), daemon=True)
    runner.start()
    assigned_at: list[datetime] = []

    class Joined(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            assigned_at.append(datetime.now())

    other = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        deadline = time.monotonic() + 60
        while account.id not in fetcher._polling and time.monotonic() < deadline:
            time.sleep(0.01)
        assert account.id in fetcher._polling, "the mailbox was never polled"
        other.subscribe([TOPIC], listener=Joined())
        while not assigned_at and time.monotonic() < deadline:
            other.poll(timeout_ms=200)
        assert assigned_at, "the second member never got partitions"
    finally:
        other.close()
        stop.set()
        runner.join(60)
        link.close()
    [first, *_] = sorted(
        (s for s in sessions(stack.state_dir / "logs" / "dovecot.log", since) if s.user == user.name),
        key=lambda s: s.started,
    )
    assert first.ended is not None and first.ended < assigned_at[0], (
        f"the session ran until {first.ended}, but the other member had partitions at {assigned_at[0]}"
    )
