"""Transaction-level advisory locks on many keys, taken in one statement."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Integer, Text, func, select

from mailintake.database.array_parameters import unnested


def lock_in_order(connection: Connection, namespace: int, keys: Sequence[int] | Sequence[str]) -> None:
    """Take the two-key advisory lock (``namespace``, key) of each of ``keys``, in their
    order, held until the transaction ends.

    Integer keys are the second key as they are; text keys go through PostgreSQL's
    ``hashtext``. Callers pass the keys sorted, so two transactions that share keys take
    them in one order and cannot deadlock on them.
    """
    if not keys:
        return
    text_keys = isinstance(keys[0], str)
    locked = unnested("lock_keys", {"key": (keys, Text if text_keys else Integer)}, numbered=True)
    second = func.hashtext(locked.c.key) if text_keys else locked.c.key
    connection.execute(select(func.pg_advisory_xact_lock(namespace, second)).order_by(locked.c.position)).all()
