"""The fetcher's loop on the stack: a hanging account does not hold up a good one, and
each poll's outcome lands in account_status."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy import select

from mailintake.database import engine_for
from mailintake.demo import demo_mail
from mailintake.runtime.http_endpoint import Health
from services.fetcher.tables import AccountStatus
from tests.waiting import wait_for

pytestmark = pytest.mark.stack


def status(stack, account_id: str):
    with engine_for(stack.database_url).connect() as connection:
        return connection.execute(select(AccountStatus).where(AccountStatus.account_id == account_id)).first()


def test_a_hanging_server_holds_up_only_its_own_account(
    stack, unique, account_for, imap_client, imap_user, imap_folder, fetcher_for, mail_raw
):
    user = imap_user
    with imap_client(user) as client:
        for i in range(2):
            client.append(imap_folder, demo_mail("max@example.com", f"Loop {unique} {i}", "x", user.address))
    good = account_for(user, id=f"good-{unique}", folder=imap_folder)
    # Accepts connections (the kernel does, from the backlog) and never says a word.
    silent = socket.create_server(("127.0.0.1", 0))
    hanging = account_for(user, id=f"hanging-{unique}", port=silent.getsockname()[1])
    fetcher = fetcher_for(good, hanging, timeout_seconds=2.0)
    stop, health = threading.Event(), Health()
    loop = threading.Thread(target=fetcher.run, args=(health, stop))
    started = time.monotonic()
    loop.start()
    try:
        good_status = wait_for(lambda: status(stack, good.id), timeout=10)
        good_done = time.monotonic() - started
        hanging_status = wait_for(lambda: status(stack, hanging.id), timeout=10)
        hanging_done = time.monotonic() - started
    finally:
        stop.set()
        loop.join(15)
        silent.close()
    assert not loop.is_alive()
    assert health.ready()[0]
    assert good_status.last_success_at is not None and good_status.mails_fetched == 2
    assert good_done < 2.0 <= hanging_done, "the good account did not wait for the hanging one's timeout"
    assert (hanging_status.last_error_step, hanging_status.last_error) == ("tls", "no answer within 2 s")
    assert hanging_status.consecutive_failures == 1 and hanging_status.last_success_at is None
    assert len(mail_raw.records(good.id)) == 2


def test_a_stop_lets_polls_in_flight_finish_but_starts_none_of_the_queued_ones(stack, unique, imap_user, account_for, fetcher_for):
    """Eight mailboxes on one worker, each poll hanging for its 2 s timeout: polls queue
    up. A stop (SIGTERM) must not work through that queue before the replica leaves."""
    silent = socket.create_server(("127.0.0.1", 0))
    connected_at: list[float] = []

    def accept_and_stay_silent() -> None:
        held = []
        while True:
            try:
                connection, _ = silent.accept()
            except OSError:  # closed at the end of the test
                break
            connected_at.append(time.monotonic())
            held.append(connection)

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    accounts = [
        account_for(imap_user, id=f"queued-{unique}-{n}", port=silent.getsockname()[1], poll_interval_seconds=5)
        for n in range(8)
    ]
    fetcher = fetcher_for(*accounts, timeout_seconds=2.0, poll_workers=1)
    stop, health = threading.Event(), Health()
    loop = threading.Thread(target=fetcher.run, args=(health, stop))
    loop.start()
    # The first polls are spread over the 5 s interval; each takes 2 s on the one worker.
    time.sleep(7)
    stop.set()
    stopped_at = time.monotonic()
    loop.join(30)
    silent.close()
    assert not loop.is_alive()
    started_after_stop = [at for at in connected_at if at > stopped_at]
    # One poll may have been on its way to connect when the stop came; no queued one starts.
    assert len(started_after_stop) <= 1, f"{len(started_after_stop)} polls started after the stop"


def test_a_restarted_fetcher_goes_on_with_a_failing_accounts_backoff(stack, unique, account_for, imap_user, fetcher_for):
    from sqlalchemy import text

    from services.fetcher.mail_source import StepFailed

    # Nothing listens on this port: every poll fails at once, at connect.
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    account = account_for(imap_user, id=f"refused-{unique}", port=port, poll_interval_seconds=5)
    before_restart = fetcher_for(account)
    for _ in range(2):
        with pytest.raises(StepFailed):
            before_restart.poll(account)
    # The last failure long ago, so the restarted fetcher polls at once instead of waiting out the rest.
    with engine_for(stack.database_url).begin() as connection:
        connection.execute(
            text("UPDATE account_status SET last_error_at = last_error_at - interval '1 hour' WHERE account_id = :id"),
            {"id": account.id},
        )

    restarted = fetcher_for(account)
    stop, health = threading.Event(), Health()
    loop = threading.Thread(target=restarted.run, args=(health, stop))
    loop.start()
    try:
        third = wait_for(lambda: (s := status(stack, account.id)) and s.consecutive_failures >= 3 and s, timeout=10)
        # Backing off from the first step again would poll 5-6 s later; the third failure's step waits 16-24 s.
        time.sleep(8)
        later = status(stack, account.id)
    finally:
        stop.set()
        loop.join(15)
    assert third is not None and third.last_error_step == "connect"
    assert later.consecutive_failures == 3, "polled again before the restored backoff was over"
