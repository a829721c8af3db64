"""Mail sessions as Dovecot's own log records them, to show that no mailbox had two at once.

The stack's Dovecot writes microsecond timestamps (``deploy/local/dovecot``). A session
starts at its ``Login:`` line and ends at its ``Disconnected`` line; both name the
session id, the end line in the mail process's prefix ``imap(user)<pid><session>``.

Only the mail process opens the mailbox, and every mail process that served a client
logs its end under that prefix. A login after which the mail process logged nothing at
all never reached the mailbox: seen when the client was killed right after its login
and while Dovecot restarted. :attr:`MailSession.opened` tells the two apart, so that
such a login is not taken for a session that stays open for ever.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

_STAMP = r"(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}) "
_LOGIN = re.compile(_STAMP + r"(?:imap|pop3)-login: Info: Login: user=<(?P<user>[^>]*)>.*session=<(?P<session>[^>]+)>")
_MAIL_PROCESS = re.compile(_STAMP + r"(?:imap|pop3)\((?P<user>[^)]*)\)<\d+><(?P<session>[^>]+)>: (?P<text>.*)")


@dataclass(frozen=True)
class MailSession:
    user: str
    session: str
    started: datetime
    ended: datetime | None
    """None while the session is still open (or its end is not logged yet)."""
    opened: bool
    """Whether the mail process logged anything for the session, so may have opened the mailbox."""


def sessions(log_file: Path, since: datetime) -> list[MailSession]:
    """Sessions that started at or after ``since`` (local time, as Dovecot writes it)."""
    started: dict[str, tuple[str, datetime]] = {}
    ended: dict[str, datetime] = {}
    opened: set[str] = set()
    for line in log_file.read_text(errors="replace").splitlines():
        if match := _LOGIN.match(line):
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S.%f")
            if at >= since:
                started[match["session"]] = (match["user"], at)
        elif match := _MAIL_PROCESS.match(line):
            opened.add(match["session"])
            if match["text"].startswith("Info: Disconnected"):
                ended[match["session"]] = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S.%f")
    return [
        MailSession(user, session, at, ended.get(session), session in opened) for session, (user, at) in started.items()
    ]


def overlapping(found: list[MailSession]) -> list[tuple[MailSession, MailSession]]:
    """Pairs of sessions of one user that were open at the same time.

    A login whose mail process logged nothing (``opened`` false) never held the mailbox
    and is left out; a session that opened it and has no end is open until the last.
    """
    by_user: dict[str, list[MailSession]] = defaultdict(list)
    for session in found:
        if session.opened:
            by_user[session.user].append(session)
    pairs = []
    for user_sessions in by_user.values():
        user_sessions.sort(key=lambda s: s.started)
        for earlier, later in zip(user_sessions, user_sessions[1:]):
            if earlier.ended is None or later.started < earlier.ended:
                pairs.append((earlier, later))
    return pairs
