"""Starting, recognising and stopping the stack's server processes.

Each server runs in its own session (``setsid``), so that stopping it can
reach every child it forked, and its pid file records the kernel start time
as well as the pid, so that a pid reused by an unrelated process after a
crash or reboot is never taken for ours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says about a process the stack started."""

    pid: int
    start_ticks: int
    argv: tuple[str, ...]

    def is_alive(self) -> bool:
        """True while this very process (same pid and start time) runs and is not a zombie."""
        return process_start_ticks(self.pid) == self.start_ticks

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> ProcessRecord | None:
        """The record in ``path``, or None if the file is missing or unreadable."""
        try:
            data = json.loads(path.read_text())
            return cls(int(data["pid"]), int(data["start_ticks"]), tuple(data["argv"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def process_start_ticks(pid: int) -> int | None:
    """Kernel start time of a live, non-zombie ``pid``, else None."""
    reap(pid)
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def process_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def session_members(leader: ProcessRecord) -> list[int]:
    """Live processes in the session ``leader`` created, including processes it left behind.

    A process counts only if it started no earlier than the leader, which
    rules out an older unrelated session that happens to reuse the number.
    """
    members = []
    for pid in all_pids():
        fields = _stat_fields(pid)
        if fields is None or fields[0] in ("Z", "X"):
            continue
        if int(fields[3]) == leader.pid and int(fields[19]) >= leader.start_ticks:
            members.append(pid)
    return members


def spawn(
    argv: Sequence[str],
    *,
    log_file: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> ProcessRecord:
    """Start ``argv`` in a new session with stdout and stderr appended to ``log_file``.

    With ``user`` (only possible as root) the process runs as that OS user,
    with that user's primary group and no supplementary groups.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        stamp = datetime.now().isoformat(timespec="seconds")
        log.write(f"\n=== mailintake stack: starting at {stamp}: {' '.join(argv)}\n".encode())
        log.flush()
        extra: dict = {}
        if user is not None:
            extra = {"user": user, "group": _primary_group(user), "extra_groups": []}
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            **extra,
        )
    # Popen objects of servers we leave running are dropped on purpose; reap()
    # collects them if they die while this interpreter is still alive.
    ticks = None
    for _ in range(50):
        ticks = process_start_ticks(process.pid)
        if ticks is not None or process.poll() is not None:
            break
        time.sleep(0.01)
    return ProcessRecord(process.pid, ticks if ticks is not None else -1, tuple(argv))


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def signal_process(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(pids_of, timeout: float) -> list[int]:
    """Poll ``pids_of()`` until it returns nothing or ``timeout`` passes; return what is left."""
    deadline = time.monotonic() + timeout
    left = pids_of()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = pids_of()
    return left


def kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        signal_process(pid, signal.SIGKILL)


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` (any address, IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def port_owner(port: int) -> tuple[int, list[str]] | None:
    """The pid and command line of a process listening on ``port``, if visible to us."""
    inodes = listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in all_pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in targets:
                    return pid, process_cmdline(pid)
            except OSError:
                continue
    return None
