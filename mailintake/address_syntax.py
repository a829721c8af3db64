"""Pieces of RFC 5322's address grammar as regular-expression text. Pure.

The classifier reads senders and the ticketer checks the addresses it answers; both
need the same notion of which local parts go without quoting.
"""

from __future__ import annotations

ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
"""One or more ASCII ``atext`` characters (RFC 5322 3.2.3): an atom."""

DOT_ATOM = rf"{ATEXT}(?:\.{ATEXT})*"
"""Atoms joined by single dots (``dot-atom-text``): a local part that needs no quotes."""
