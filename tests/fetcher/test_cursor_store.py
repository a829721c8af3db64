import pytest

from mailintake.database import engine_for
from services.fetcher.cursor_store import CursorStore

pytestmark = pytest.mark.stack


def test_the_poll_cycle_counts_per_account_across_folders_and_apart_from_the_mark(stack, unique):
    store, account_id = CursorStore(engine_for(stack.database_url)), f"cycles-{unique}"
    assert [store.next_cycle(account_id, "INBOX") for _ in range(2)] == [1, 2]
    store.save_mark(account_id, "INBOX", uidvalidity=7, last_uid=42)
    assert store.next_cycle(account_id, "Archive") == 3, "a new folder continues the account's count"
    assert store.next_cycle(f"other-{unique}", "INBOX") == 1
    inbox = store.load(account_id, "INBOX")
    assert (inbox.uidvalidity, inbox.last_uid, inbox.poll_cycle) == (7, 42, 2)
    assert store.load(account_id, "Archive").last_uid == 0
