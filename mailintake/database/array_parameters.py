"""Lists of values sent as array parameters: look-ups, and rows unnested into a table.

Either way the statement's text stays the same whatever the number of values, so
psycopg and SQLAlchemy convert and cache it once (a list rendered as placeholders or a
VALUES row per value is new SQL for every batch size)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import any_, bindparam, func
from sqlalchemy.dialects.postgresql import ARRAY


def in_array(column: Any, values: Sequence[object], item_type: type) -> Any:
    """``column = ANY(:array)``: one parameter whatever the number of values, so the
    statement's text, and its plan in psycopg and SQLAlchemy caches, stay the same
    (an ``IN`` list renders a placeholder per value: new SQL for every batch size).
    ``item_type`` is the SQLAlchemy type of the array's elements (``Text``, ``BigInteger``)."""
    return column == any_(bindparam(None, list(values), type_=ARRAY(item_type())))


def unnested(name: str, columns: dict[str, tuple[Sequence[object], type]], *, numbered: bool = False) -> Any:
    """A derived table ``name`` whose columns are array parameters unnested side by side
    (``columns``: column name -> its values and their SQLAlchemy item type), so a batch's
    rows go in one short statement whatever their number. ``numbered`` adds the column
    ``position`` (1, 2, ... in the arrays' order), to order by."""
    arrays = [
        bindparam(f"{name}_{column}", list(values), type_=ARRAY(item_type()))
        for column, (values, item_type) in columns.items()
    ]
    table = func.unnest(*arrays).table_valued(*columns, with_ordinality="position" if numbered else None)
    return table.render_derived(name=name)
