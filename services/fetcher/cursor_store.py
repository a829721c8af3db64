"""Durable per-mailbox state of the fetcher, in PostgreSQL: the IMAP high-water mark
and the account's poll-cycle counter."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects.postgresql import insert

from services.fetcher.core import Cursor
from services.fetcher.tables import MailboxState


class CursorStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self, account_id: str, folder: str) -> Cursor:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(MailboxState).where(MailboxState.account_id == account_id, MailboxState.folder == folder)
            ).first()
        if row is None:
            return Cursor(uidvalidity=None, last_uid=0, poll_cycle=0)
        return Cursor(uidvalidity=row.uidvalidity, last_uid=row.last_uid, poll_cycle=row.poll_cycle)

    def save_mark(self, account_id: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        """Move the high-water mark; the poll-cycle counter is left alone."""
        values = {"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": func.now()}
        with self._engine.begin() as connection:
            connection.execute(
                insert(MailboxState)
                .values(account_id=account_id, folder=folder, **values)
                .on_conflict_do_update(index_elements=["account_id", "folder"], set_=values)
            )

    def next_cycle(self, account_id: str, folder: str) -> int:
        """Count one more poll of the account and return its number.

        The count continues over all of the account's folders, so pointing an account at
        another folder does not restart it (bundling compares cycle numbers, and a
        restarted counter would put new mails into old tickets' windows).
        """
        highest = (
            select(func.coalesce(func.max(MailboxState.poll_cycle), 0))
            .where(MailboxState.account_id == account_id)
            .scalar_subquery()
        )
        with self._engine.begin() as connection:
            return connection.execute(
                insert(MailboxState)
                .values(account_id=account_id, folder=folder, poll_cycle=highest + 1)
                .on_conflict_do_update(
                    index_elements=["account_id", "folder"], set_={"poll_cycle": highest + 1, "updated_at": func.now()}
                )
                .returning(MailboxState.poll_cycle)
            ).scalar_one()
