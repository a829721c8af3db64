"""The reading of Dovecot's log that the ownership test and the fault drills rely on."""

from __future__ import annotations

from datetime import datetime

from tests.peers.dovecot_sessions import overlapping, sessions

SINCE = datetime(2026, 12, 2, 8, 0, 0)


def login(at: str, user: str, session: str) -> str:
    return (
        f"2026-12-02 {at} imap-login: Info: Login: user=<{user}>, method=PLAIN, rip=127.0.0.1, "
        f"lip=127.0.0.1, mpid=4711, TLS, session=<{session}>"
    )


def mail_process(at: str, user: str, session: str, text: str) -> str:
    return f"2026-12-02 {at} imap({user})<4711><{session}>: {text}"


def served(user: str, session: str, start: str, end: str) -> list[str]:
    """The lines of a session the mail process served from ``start`` until it logged out at ``end``."""
    return [login(start, user, session), mail_process(end, user, session, "Info: Disconnected: Logged out in=72 out=895")]


def read(tmp_path, *lines: str):
    log = tmp_path / "dovecot.log"
    log.write_text("\n".join(lines) + "\n")
    return sessions(log, SINCE)


def test_a_session_runs_from_its_login_to_its_disconnected_line(tmp_path):
    [found] = read(tmp_path, *served("ann", "S1", "08:00:01.000001", "08:00:01.500000"))
    assert (found.user, found.started, found.ended, found.opened) == (
        "ann",
        datetime(2026, 12, 2, 8, 0, 1, 1),
        datetime(2026, 12, 2, 8, 0, 1, 500000),
        True,
    )


def test_logins_before_since_are_left_out(tmp_path):
    found = read(tmp_path, login("07:59:59.999999", "ann", "S0"), login("08:00:00.000000", "ann", "S1"))
    assert [s.session for s in found] == ["S1"]


def test_two_sessions_of_one_mailbox_at_once_are_found(tmp_path):
    found = read(
        tmp_path,
        *served("ann", "S1", "08:00:01.000000", "08:00:03.000000"),
        *served("ann", "S2", "08:00:02.000000", "08:00:04.000000"),
    )
    assert [(a.session, b.session) for a, b in overlapping(found)] == [("S1", "S2")]


def test_sessions_one_after_the_other_and_of_other_mailboxes_do_not_overlap(tmp_path):
    found = read(
        tmp_path,
        *served("ann", "S1", "08:00:01.000000", "08:00:02.000000"),
        *served("bob", "S2", "08:00:01.100000", "08:00:03.000000"),
        login("08:00:02.000001", "ann", "S3"),
        mail_process("08:00:03.000000", "ann", "S3", "Info: Disconnected: Connection closed"),
    )
    assert overlapping(found) == []


def test_a_served_session_with_no_end_counts_as_open_to_the_last(tmp_path):
    found = read(
        tmp_path,
        login("08:00:01.000000", "ann", "S1"),
        mail_process("08:00:01.200000", "ann", "S1", "Error: something went wrong"),
        *served("ann", "S2", "08:10:00.000000", "08:10:01.000000"),
    )
    assert [(a.session, a.opened, a.ended) for a, _ in overlapping(found)] == [("S1", True, None)]


def test_a_login_the_mail_process_never_served_held_no_mailbox(tmp_path):
    found = read(
        tmp_path,
        login("08:00:01.000000", "ann", "S1"),  # its client was killed right after the login
        *served("ann", "S2", "08:00:05.000000", "08:00:06.000000"),
    )
    assert [(s.session, s.opened, s.ended) for s in found] == [
        ("S1", False, None),
        ("S2", True, datetime(2026, 12, 2, 8, 0, 6)),
    ]
    assert overlapping(found) == []
