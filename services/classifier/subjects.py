"""Pure helpers for subjects, tested directly."""

from __future__ import annotations

import re

_WHITESPACE = re.compile(r"\s+")


def normalise_subject(subject: str | None) -> str:
    """Collapse runs of whitespace (folding, tabs, CR/LF) into one space and trim.

    Nothing else changes: bundling compares subjects exactly, so 'Re:' and case stay.
    """
    return _WHITESPACE.sub(" ", subject or "").strip()
