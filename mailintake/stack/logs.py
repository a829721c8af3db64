"""Reading the tails of the component log files."""

from __future__ import annotations

from pathlib import Path

START_MARKER = "=== mailintake stack: starting"


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of ``path`` ('' if it does not exist), read from the end."""
    if lines <= 0:
        return ""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            end = handle.tell()
            block, data = 8192, b""
            while end > 0 and data.count(b"\n") <= lines:
                step = min(block, end)
                end -= step
                handle.seek(end)
                data = handle.read(step) + data
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def tail_of_last_start(path: Path, lines: int = 40) -> str:
    """Like ``tail`` but not reaching back before the latest start of the component."""
    text = tail(path, lines)
    marker = text.rfind(START_MARKER)
    return text[marker:] if marker >= 0 else text
