"""Which dead letters a command looks at, and how one is shown. Pure."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from mailintake.contracts.records import DeadLetter

_RELATIVE = re.compile(r"^(?P<amount>\d+)(?P<unit>[smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


@dataclass(frozen=True)
class StoredLetter:
    """A dead letter and where it sits in ``mail.dlq``."""

    partition: int
    offset: int
    letter: DeadLetter

    @property
    def position(self) -> tuple[int, int]:
        return self.partition, self.offset

    @property
    def key(self) -> str:
        """The letter's key in the replay ledger (``mail.dlq.replays``)."""
        return f"mail.dlq:{self.partition}:{self.offset}"


@dataclass(frozen=True)
class LetterFilter:
    """Conditions a letter must all meet; None means "any"."""

    reason_contains: str | None = None
    service: str | None = None
    source_topic: str | None = None
    exception_type_contains: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def matches(self, stored: StoredLetter) -> bool:
        letter = stored.letter
        return (
            (self.reason_contains is None or self.reason_contains.lower() in letter.reason.lower())
            and (self.service is None or letter.service == self.service)
            and (self.source_topic is None or letter.source_topic == self.source_topic)
            and (self.exception_type_contains is None or self.exception_type_contains in letter.exception_type)
            and (self.since is None or letter.failed_at >= self.since)
            and (self.until is None or letter.failed_at < self.until)
        )


def parse_time(value: str, now: dt.datetime) -> dt.datetime:
    """A point in time from ``2024-12-10``, ``2024-12-10T08:15:00+01:00`` (naive means UTC)
    or a span back from ``now``: ``90m``, ``6h``, ``2d``.

    >>> parse_time("2h", dt.datetime(2024, 12, 10, 12, tzinfo=dt.UTC)).hour
    10
    """
    relative = _RELATIVE.match(value.strip())
    if relative:
        return now - dt.timedelta(**{_UNITS[relative["unit"]]: int(relative["amount"])})
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is neither an ISO date/time nor a span like 90m, 6h or 2d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def letter_row(stored: StoredLetter, replayed: bool) -> str:
    """One line of ``dlq list``; the reason last, since it is the long part."""
    letter = stored.letter
    source = f"{letter.source_topic}:{letter.source_partition}:{letter.source_offset}"
    mark = "replayed" if replayed else "-"
    return (
        f"{stored.partition}:{stored.offset:<8} {letter.failed_at:%Y-%m-%d %H:%M:%S}  {letter.service:<10} "
        f"{source:<28} {mark:<8} {letter.exception_type.rsplit('.', 1)[-1]:<22} {letter.reason}"
    )


LIST_HEADER = f"{'DLQ':<10} {'FAILED AT (UTC)':<19}  {'SERVICE':<10} {'SOURCE':<28} {'REPLAYED':<8} {'EXCEPTION':<22} REASON"
