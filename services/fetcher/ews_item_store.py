"""The EWS item ids already produced, per account and folder, in PostgreSQL
(:class:`~services.fetcher.ews_mailbox.ProducedItemMarks`)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert

from services.fetcher.tables import EwsProducedItem


class EwsItemStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def produced(self, account_id: str, folder: str) -> set[str]:
        with self._engine.connect() as connection:
            return set(
                connection.scalars(
                    select(EwsProducedItem.item_id).where(
                        EwsProducedItem.account_id == account_id, EwsProducedItem.folder == folder
                    )
                )
            )

    def record(self, account_id: str, folder: str, item_ids: Collection[str]) -> None:
        if item_ids:
            rows = [{"account_id": account_id, "folder": folder, "item_id": item_id} for item_id in item_ids]
            with self._engine.begin() as connection:
                connection.execute(insert(EwsProducedItem).values(rows).on_conflict_do_nothing())

    def forget(self, account_id: str, folder: str, item_ids: Collection[str]) -> None:
        if item_ids:
            with self._engine.begin() as connection:
                connection.execute(
                    delete(EwsProducedItem).where(
                        EwsProducedItem.account_id == account_id,
                        EwsProducedItem.folder == folder,
                        EwsProducedItem.item_id.in_(list(item_ids)),
                    )
                )
