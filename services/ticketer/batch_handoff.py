"""How the ticketer's agent hands its batches to the batch task: at most one waits, and
what comes meanwhile joins it.

With a queue of one batch, a busy ticketer had three batches ahead of a new mail: one in
PostgreSQL, one in the queue, and one the agent held while it waited to put it. Under
bursts (a poll of a mailbox brings hundreds of mails at once) a mail then waited for
three transactions, each made small by the agent's short wait to fill a batch. Here a
batch that comes while one waits is added to it, as long as the two fit in one
transaction (``max_events``), so a mail waits for the transaction in flight and its own.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

EventT = TypeVar("EventT")


class BatchHandoff(Generic[EventT]):
    """One waiting batch between a producer (the agent) and a consumer (the batch task).

    ``put`` adds a batch's events after those already waiting, in order, or waits while
    that would make the waiting batch longer than ``max_events``; ``get`` takes all that
    waits, or waits for a batch.
    """

    def __init__(self, max_events: int) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, not {max_events}")
        self.max_events = max_events
        self._waiting: list[EventT] | None = None
        self._changed = asyncio.Condition()

    def waiting(self) -> int:
        """Events waiting to be taken."""
        return len(self._waiting) if self._waiting is not None else 0

    async def put(self, events: list[EventT]) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._waiting is None or len(self._waiting) + len(events) <= self.max_events)
            if self._waiting is None:
                self._waiting = list(events)
            else:
                self._waiting.extend(events)
            self._changed.notify_all()

    async def get(self) -> list[EventT]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._waiting is not None)
            events, self._waiting = self._waiting, None
            self._changed.notify_all()
            assert events is not None
            return events
