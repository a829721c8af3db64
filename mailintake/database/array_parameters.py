"""Look-ups by a list of values, sent as one array parameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY


def in_array(column: Any, values: Sequence[object], item_type: type) -> Any:
    """``column = ANY(:array)``: one parameter whatever the number of values, so the
    statement's text, and its plan in psycopg and SQLAlchemy caches, stay the same
    (an ``IN`` list renders a placeholder per value: new SQL for every batch size).
    ``item_type`` is the SQLAlchemy type of the array's elements (``Text``, ``BigInteger``)."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(item_type())))
