from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from mailintake.contracts.records import ClaimCheck
from services.fetcher.account import Account
from services.fetcher.core import Cursor, mail_record, message_id_of, plan_fetch


def test_only_uids_above_the_mark_are_fetched_even_when_the_server_returns_the_last_one():
    # 'UID 11:*' on a folder whose highest UID is 10 answers 10.
    plan = plan_fetch(Cursor(uidvalidity=5, last_uid=10, poll_cycle=3), 5, [10])
    assert plan.uids == ()
    assert not plan.uidvalidity_changed


def test_new_uids_come_oldest_first():
    plan = plan_fetch(Cursor(5, 10, 3), 5, [13, 11, 12])
    assert plan.uids == (11, 12, 13)


def test_uidvalidity_change_fetches_the_whole_folder_again():
    plan = plan_fetch(Cursor(5, 10, 3), 6, [1, 2])
    assert plan.uidvalidity_changed
    assert plan.uids == (1, 2)


def test_first_poll_has_no_uidvalidity_to_compare():
    plan = plan_fetch(Cursor(None, 0, 0), 6, [1, 2])
    assert not plan.uidvalidity_changed and plan.uids == (1, 2)


def account() -> Account:
    return Account(id="desk", name="Desk", host="h", port=993, username="u", password=SecretStr("p"))


def test_record_carries_the_bytes_inline_or_the_claim_check():
    raw = b"Message-ID: <a@b>\r\nSubject: x\r\n\r\nbody"
    now = datetime(2026, 11, 29, tzinfo=UTC)
    inline = mail_record(account(), source_id="imap:5:11", raw=raw, poll_cycle=4, fetched_at=now, claim_check=None)
    assert inline.raw == raw and inline.size == len(raw) and inline.message_id == "<a@b>"
    check = ClaimCheck(store="postgres", sha256="0" * 64, size=len(raw))
    claimed = mail_record(account(), source_id="imap:5:11", raw=raw, poll_cycle=4, fetched_at=now, claim_check=check)
    assert claimed.raw is None and claimed.claim_check == check


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe garbage", b"Subject: no id\r\n\r\n"])
def test_message_id_absent_or_unreadable_is_none(raw):
    assert message_id_of(raw) is None
