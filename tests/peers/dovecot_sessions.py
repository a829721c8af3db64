"""Mail sessions as Dovecot's own log records them, to show that no mailbox had two at once.

The stack's Dovecot writes microsecond timestamps (``deploy/local/dovecot``). A session
starts at its ``Login:`` line and ends at its ``Disconnected`` line; both name the
session id, the end line in the mail process's prefix ``imap(user)<pid><session>``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_STAMP = r"(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) "
_LOGIN = re.compile(_STAMP + r"(?:imap|pop3)-login: Info: Login: user=<(?P<user>[^>]*)>.*session=<(?P<session>[^>]+)>")
_END = re.compile(_STAMP + r"(?:imap|pop3)\((?P<user>[^)]*)\)<\d+><(?P<session>[^>]+)>: Info: Disconnected")


@dataclass(frozen=True)
class MailSession:
    user: str
    session: str
    started: datetime
    ended: datetime | None
    """None while the session is still open (or its end is not logged yet)."""


def sessions(log_file: Path, since: datetime) -> list[MailSession]:
    """Sessions that started at or after ``since`` (local time, as Dovecot writes it)."""
    started: dict[str, tuple[str, datetime]] = {}
    ended: dict[str, datetime] = {}
    for line in log_file.read_text(errors="replace").splitlines():
        if match := _LOGIN.match(line):
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S.%f")
            if at >= since:
                started[match["session"]] = (match["user"], at)
        elif match := _END.match(line):
            ended[match["session"]] = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S.%f")
    return [MailSession(user, session, at, ended.get(session)) for session, (user, at) in started.items()]


def overlapping(found: list[MailSession]) -> list[tuple[MailSession, MailSession]]:
    """Pairs of sessions of one user that were open at the same time."""
    by_user: dict[str, list[MailSession]] = defaultdict(list)
    for session in found:
        by_user[session.user].append(session)
    pairs = []
    for user_sessions in by_user.values():
        user_sessions.sort(key=lambda s: s.started)
        for earlier, later in zip(user_sessions, user_sessions[1:]):
            if earlier.ended is None or later.started < earlier.ended:
                pairs.append((earlier, later))
    return pairs
