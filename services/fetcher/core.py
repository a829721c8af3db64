"""The fetcher's pure core: which mails a poll fetches and the record each becomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email import policy

from mailintake.contracts.records import ClaimCheck, MailRaw, Protocol
from services.fetcher.account import Account


@dataclass(frozen=True)
class Cursor:
    """The durable high-water mark of one folder."""

    uidvalidity: int | None
    last_uid: int
    poll_cycle: int


@dataclass(frozen=True)
class FetchPlan:
    uids: tuple[int, ...]
    uidvalidity_changed: bool


def plan_fetch(cursor: Cursor, uidvalidity: int, found_uids: list[int]) -> FetchPlan:
    """The UIDs to fetch, oldest first.

    After a UIDVALIDITY change every old UID is meaningless, so everything in the folder
    is fetched again; downstream deduplication by Message-ID keeps that from creating
    duplicate tickets. Otherwise only UIDs above the mark count (a search for ``N:*``
    also returns the highest UID below N, which must not be fetched again).
    """
    if cursor.uidvalidity is not None and cursor.uidvalidity != uidvalidity:
        return FetchPlan(tuple(sorted(found_uids)), True)
    return FetchPlan(tuple(sorted(u for u in found_uids if u > cursor.last_uid)), False)


def message_id_of(raw: bytes) -> str | None:
    """The Message-ID header, read from the header block only."""
    try:
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(raw)
        value = headers.get("Message-ID")
    except Exception:  # noqa: BLE001 - a broken header is the classifier's problem, not a reason to lose the mail
        return None
    return str(value).strip() or None if value else None


def mail_record(
    account: Account,
    *,
    source_id: str,
    raw: bytes,
    poll_cycle: int,
    fetched_at: datetime,
    claim_check: ClaimCheck | None,
) -> MailRaw:
    """The ``mail.raw`` record of one fetched mail; ``raw`` travels inline unless a claim check is given."""
    return MailRaw(
        account_id=account.id,
        account_name=account.name,
        protocol=Protocol(account.protocol.value.upper()),
        source_id=source_id,
        message_id=message_id_of(raw),
        poll_cycle=poll_cycle,
        poll_interval_seconds=account.poll_interval_seconds,
        fetched_at=fetched_at,
        size=len(raw),
        raw=None if claim_check else raw,
        claim_check=claim_check,
        sender_identity=account.sender,
        ticket_options=account.ticket_options,
    )
