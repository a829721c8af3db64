"""The UIDLs of POP3 mails already produced, per account, in PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert

from services.fetcher.tables import Pop3Uidl


class UidlStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def seen(self, account_id: str) -> set[str]:
        with self._engine.connect() as connection:
            return set(connection.scalars(select(Pop3Uidl.uidl).where(Pop3Uidl.account_id == account_id)))

    def remember(self, account_id: str, uidls: Collection[str]) -> None:
        if uidls:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(Pop3Uidl).values([{"account_id": account_id, "uidl": u} for u in uidls]).on_conflict_do_nothing()
                )

    def forget(self, account_id: str, uidls: Collection[str]) -> None:
        if uidls:
            with self._engine.begin() as connection:
                connection.execute(
                    delete(Pop3Uidl).where(Pop3Uidl.account_id == account_id, Pop3Uidl.uidl.in_(list(uidls)))
                )
