"""kill -9 of the fetcher at random points while it fetches 2,000 mails, and restarts
of Dovecot and Kafka in the middle of a fetch.

At every kill, what the server already lost (deleted) or changed (flagged \\Seen) must
already be in ``mail.raw``: the fetcher acts only after Kafka's acknowledgement. After
the last trial every mail is in ``mail.raw`` at least once (re-produced ones are allowed;
the ticketer deduplicates them).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pytest

from mailintake.demo import demo_mail
from mailintake.stack import add_mail_user
from tests.fetcher.crash_drill import kill_during_fetch, start_fetcher

pytestmark = pytest.mark.stack

MAILS_PER_ACCOUNT = 1000
TRIALS = 10


def message_id(account: str, n: int) -> str:
    return f"<crash-{account}-{n}@test.mailintake>"


def fill(imap_client, user, account: str) -> None:
    padding = "x" * 16000  # 16 KB per mail, so a chunk takes long enough to be interrupted inside
    with imap_client(user) as client:
        for start in range(0, MAILS_PER_ACCOUNT, 250):
            client.multiappend(
                "INBOX",
                [
                    demo_mail("crash@example.com", f"crash {n}", padding, user.address, message_id(account, n))
                    for n in range(start, min(start + 250, MAILS_PER_ACCOUNT))
                ],
            )


class ServerView:
    """What the server says about the two accounts' INBOXes right now."""

    def __init__(self, imap_client, seen_user, delete_user) -> None:
        self._imap_client, self._seen_user, self._delete_user = imap_client, seen_user, delete_user

    def progress(self) -> int:
        """How many mails were flagged or deleted: cheap (STATUS), for timing the kills."""
        done = 0
        for user, item in ((self._seen_user, b"UNSEEN"), (self._delete_user, b"MESSAGES")):
            with self._imap_client(user) as client:
                done += MAILS_PER_ACCOUNT - client.folder_status("INBOX", [item])[item]
        return done

    def acted_on(self, accounts: dict[str, str]) -> set[str]:
        """Message-IDs the fetcher has flagged or deleted."""
        acted: set[str] = set()
        with self._imap_client(self._seen_user) as client:
            client.select_folder("INBOX", readonly=True)
            for data in client.fetch(client.search(["SEEN"]), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).values():
                acted.add(data[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[1].strip())
        with self._imap_client(self._delete_user) as client:
            client.select_folder("INBOX", readonly=True)
            # The fetcher expunges while this session reads: for a mail that was in the SEARCH
            # result but is gone by the FETCH, Dovecot answers NIL or leaves the item out of
            # its FETCH response. Either counts as deleted.
            present = {
                header.decode().split(":", 1)[1].strip()
                for data in client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"]).values()
                if (header := data.get(b"BODY[HEADER.FIELDS (MESSAGE-ID)]")) is not None
            }
        delete_account = accounts["delete"]
        acted |= {message_id(delete_account, n) for n in range(MAILS_PER_ACCOUNT)} - present
        return acted


def start_imap_fetcher(accounts_file, stack, mails_per_chunk: int = 10) -> subprocess.Popen:
    # Small chunks of the 16 KB mails: many of them, so kills and restarts land mid-fetch.
    return start_fetcher(accounts_file, stack, {"MAILINTAKE_FETCHER_FETCH_CHUNK_BYTES": str(mails_per_chunk * 16_600)})


def two_full_mailboxes(unique, tmp_path, imap_client, account_for):
    """A mark_seen and a delete account with 1,000 mails each, and their accounts file."""
    seen_user = add_mail_user(f"crs{unique}", f"pw-{unique}")
    delete_user = add_mail_user(f"crd{unique}", f"pw-{unique}")
    accounts = {"seen": f"crash-seen-{unique}", "delete": f"crash-delete-{unique}"}
    fill(imap_client, seen_user, accounts["seen"])
    fill(imap_client, delete_user, accounts["delete"])
    accounts_file = tmp_path / "accounts.json"
    accounts_file.write_text(json.dumps([
        {**account_for(seen_user, id=accounts["seen"], after_fetch="mark_seen").model_dump(mode="json"),
         "password": seen_user.password},
        {**account_for(delete_user, id=accounts["delete"], after_fetch="delete").model_dump(mode="json"),
         "password": delete_user.password},
    ]))
    return accounts, accounts_file, ServerView(imap_client, seen_user, delete_user)


def wait_until_done(server, accounts, timeout) -> int:
    deadline = time.monotonic() + timeout
    while (done := len(server.acted_on(accounts))) < 2 * MAILS_PER_ACCOUNT and time.monotonic() < deadline:
        time.sleep(0.5)
    return done


def test_kill_9_at_random_points_loses_nothing_and_acts_only_after_the_ack(
    stack, unique, tmp_path, imap_client, account_for, mail_raw
):
    rng = random.Random(unique)
    accounts, accounts_file, server = two_full_mailboxes(unique, tmp_path, imap_client, account_for)

    def produced() -> set[str]:
        return {r.message_id for account in accounts.values() for r in mail_raw.records(account)}

    def no_mail_acted_on_before_kafka_had_it(trial: int) -> None:
        missing = server.acted_on(accounts) - produced()
        assert not missing, f"trial {trial}: {len(missing)} mails were acted on before Kafka had them, e.g. {sorted(missing)[:3]}"

    kills = kill_during_fetch(
        trials=TRIALS,
        rng=rng,
        start=lambda: start_imap_fetcher(accounts_file, stack),
        progress=server.progress,
        total=2 * MAILS_PER_ACCOUNT,
        after_kill=no_mail_acted_on_before_kafka_had_it,
    )
    assert len(kills) >= TRIALS, f"only {len(kills)} kills landed mid-fetch"
    assert any(k > 0 for k in kills), "no kill landed after any progress"

    # The survivor finishes the job.
    process = start_imap_fetcher(accounts_file, stack)
    try:
        wait_until_done(server, accounts, timeout=180)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    everything = {message_id(accounts[kind], n) for kind in accounts for n in range(MAILS_PER_ACCOUNT)}
    assert server.acted_on(accounts) == everything
    lost = everything - produced()
    assert not lost, f"{len(lost)} mails never reached mail.raw"


@pytest.mark.stack_restart
def test_dovecot_and_kafka_restarts_in_the_middle_of_a_fetch_lose_nothing(
    stack, unique, tmp_path, imap_client, account_for, mail_raw
):
    from tests.stack_faults import restart

    accounts, accounts_file, server = two_full_mailboxes(unique, tmp_path, imap_client, account_for)
    # One mail per chunk: slow enough that the fetch is still under way when Kafka restarts,
    # after Dovecot's restart and the backoff it causes.
    process = start_imap_fetcher(accounts_file, stack, mails_per_chunk=1)
    try:
        for component, progress in (("dovecot", 300), ("kafka", 900)):
            deadline = time.monotonic() + 120
            while len(server.acted_on(accounts)) < progress and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(server.acted_on(accounts)) < 2 * MAILS_PER_ACCOUNT, f"the fetch ended before {component} restarted"
            restart(component)
        # A failed poll backs off (interval 5 s, doubling): allow for a few rounds.
        done = wait_until_done(server, accounts, timeout=240)
        assert process.poll() is None, "the fetcher must ride out server restarts, not exit"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert done == 2 * MAILS_PER_ACCOUNT
    produced = {r.message_id for account in accounts.values() for r in mail_raw.records(account)}
    everything = {message_id(accounts[kind], n) for kind in accounts for n in range(MAILS_PER_ACCOUNT)}
    assert everything <= produced, f"{len(everything - produced)} mails never reached mail.raw"
