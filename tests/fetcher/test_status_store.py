from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mailintake.database import engine_for
from services.fetcher.status_store import AccountStatusStore
from services.fetcher.tables import AccountStatus

pytestmark = pytest.mark.stack


def test_failures_count_up_until_a_good_poll_and_mails_add_up(stack, unique):
    engine = engine_for(stack.database_url)
    store, account_id = AccountStatusStore(engine), f"status-{unique}"
    start = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    store.record_success(account_id, at=start, lag_seconds=0.2, mails=3)
    assert store.record_failure(account_id, at=start + timedelta(minutes=1), lag_seconds=None, step="connect", error="e1") == 1
    assert store.record_failure(account_id, at=start + timedelta(minutes=2), lag_seconds=1.5, step="tls", error="e2", mails=1) == 2
    with engine.connect() as connection:
        failing = connection.execute(select(AccountStatus).where(AccountStatus.account_id == account_id)).one()
    assert (failing.consecutive_failures, failing.last_error_step, failing.last_error, failing.mails_fetched) == (2, "tls", "e2", 4)
    assert failing.last_success_at == datetime(2026, 11, 29, 12, 0) and failing.last_error_at == datetime(2026, 11, 29, 12, 2)
    store.record_success(account_id, at=start + timedelta(minutes=3), lag_seconds=0.0, mails=2)
    with engine.connect() as connection:
        good = connection.execute(select(AccountStatus).where(AccountStatus.account_id == account_id)).one()
    assert (good.consecutive_failures, good.mails_fetched, good.poll_lag_seconds) == (0, 6, 0.0)
    assert good.last_error == "e2", "the last error stays for the admin page's history"


def test_failing_accounts_come_back_with_their_count_and_the_time_since_the_last_failure(stack, unique):
    engine = engine_for(stack.database_url)
    store = AccountStatusStore(engine)
    failing, recovered = f"failing-{unique}", f"recovered-{unique}"
    start = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    for minute in (1, 2):
        store.record_failure(failing, at=start + timedelta(minutes=minute), lag_seconds=None, step="connect", error="e")
        store.record_failure(recovered, at=start + timedelta(minutes=minute), lag_seconds=None, step="connect", error="e")
    store.record_success(recovered, at=start + timedelta(minutes=3), lag_seconds=0.0, mails=0)
    found = store.failing(start + timedelta(minutes=2, seconds=30))
    assert found[failing] == (2, 30.0)
    assert recovered not in found
