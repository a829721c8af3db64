"""The priority a mail declares, from whichever header its client writes. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

HIGH, NORMAL, LOW = "high", "normal", "low"

_WORDS = {
    "high": HIGH,
    "urgent": HIGH,
    "highest": HIGH,
    "normal": NORMAL,
    "medium": NORMAL,
    "low": LOW,
    "non-urgent": LOW,
    "lowest": LOW,
}


def _x_priority(value: str) -> str | None:
    # "1 (Highest)", "2 (High)", "3 (Normal)", "4 (Low)", "5 (Lowest)"; some clients write only the word.
    value = value.strip()
    if value[:1].isdigit():
        level = int(value[0])
        if level in (1, 2):
            return HIGH
        if level == 3:
            return NORMAL
        if level in (4, 5):
            return LOW
        return None
    return _WORDS.get(value.split(None, 1)[0].lower()) if value else None


def declared_priority(headers: Mapping[str, Sequence[str]]) -> str | None:
    """``high``, ``normal`` or ``low`` as the mail declares it, or None when it declares none.

    Read in this order: X-Priority (most clients), Importance (Outlook, RFC 2156),
    X-MSMail-Priority (old Outlook), Priority (RFC 2156: urgent, normal, non-urgent).

    >>> declared_priority({"x-priority": ["1 (Highest)"]})
    'high'
    >>> declared_priority({"importance": ["Low"]})
    'low'
    >>> declared_priority({}) is None
    True
    """
    for value in headers.get("x-priority", ())[:1]:
        found = _x_priority(value)
        if found:
            return found
    for name in ("importance", "x-msmail-priority", "priority"):
        for value in headers.get(name, ())[:1]:
            words = value.strip().split(None, 1)
            found = _WORDS.get(words[0].lower()) if words else None
            if found:
                return found
    return None
