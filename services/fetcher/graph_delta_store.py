"""The Graph delta state in PostgreSQL (:class:`~services.fetcher.graph_mailbox.DeltaState`):
message ids already produced, and the deltaLink of the last complete round."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.dialects.postgresql import insert

from services.fetcher.graph_mailbox import StoredDeltaLink
from services.fetcher.tables import GraphDeltaLink, GraphProducedMessage


class GraphDeltaStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def delta_link(self, account_id: str, folder: str) -> StoredDeltaLink | None:
        with self._engine.connect() as connection:
            row = connection.execute(
                select(GraphDeltaLink.folder_id, GraphDeltaLink.delta_link).where(
                    GraphDeltaLink.account_id == account_id, GraphDeltaLink.folder == folder
                )
            ).first()
        return StoredDeltaLink(row.folder_id, row.delta_link) if row else None

    def produced(self, account_id: str, folder: str) -> set[str]:
        with self._engine.connect() as connection:
            return set(
                connection.scalars(
                    select(GraphProducedMessage.message_id).where(
                        GraphProducedMessage.account_id == account_id, GraphProducedMessage.folder == folder
                    )
                )
            )

    def forget(self, account_id: str, folder: str, message_ids: Collection[str]) -> None:
        if message_ids:
            with self._engine.begin() as connection:
                connection.execute(
                    delete(GraphProducedMessage).where(
                        GraphProducedMessage.account_id == account_id,
                        GraphProducedMessage.folder == folder,
                        GraphProducedMessage.message_id.in_(list(message_ids)),
                    )
                )

    def record(
        self, account_id: str, folder: str, message_ids: Collection[str], delta_link: StoredDeltaLink | None
    ) -> None:
        if not message_ids and delta_link is None:
            return
        with self._engine.begin() as connection:
            if message_ids:
                rows = [{"account_id": account_id, "folder": folder, "message_id": m} for m in message_ids]
                connection.execute(insert(GraphProducedMessage).values(rows).on_conflict_do_nothing())
            if delta_link is not None:
                values = {"folder_id": delta_link.folder_id, "delta_link": delta_link.delta_link, "updated_at": func.now()}
                connection.execute(
                    insert(GraphDeltaLink)
                    .values(account_id=account_id, folder=folder, **values)
                    .on_conflict_do_update(index_elements=["account_id", "folder"], set_=values)
                )
