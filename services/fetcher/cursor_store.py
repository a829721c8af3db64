"""Durable high-water marks of the fetcher, in PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine, select
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

    def save(self, account_id: str, folder: str, cursor: Cursor) -> None:
        values = {"uidvalidity": cursor.uidvalidity, "last_uid": cursor.last_uid, "poll_cycle": cursor.poll_cycle}
        with self._engine.begin() as connection:
            connection.execute(
                insert(MailboxState)
                .values(account_id=account_id, folder=folder, **values)
                .on_conflict_do_update(index_elements=["account_id", "folder"], set_=values)
            )
