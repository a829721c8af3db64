"""What every server of the stack has in common: pid file, log, start, readiness, stop."""

from __future__ import annotations

import signal
import time
from abc import ABC, abstractmethod
from typing import ClassVar

from .errors import StackError
from .layout import StackLayout
from .logs import tail, tail_of_last_start
from .os_accounts import Accounts
from .preflight import MissingTool
from .processes import ProcessRecord, process_cmdline, spawn
from .settings import HOST, StackSettings

#: How many log lines an error message shows.
ERROR_TAIL_LINES = 30


class ProbeFailed(Exception):
    """A readiness or health check did not pass; the message says what was seen."""


class Component(ABC):
    """One server process managed by the stack."""

    name: ClassVar[str]
    stop_signal: ClassVar[int] = signal.SIGTERM
    #: Seconds between the stop signal and SIGKILL.
    stop_timeout: ClassVar[float] = 30.0

    def __init__(self, settings: StackSettings, layout: StackLayout):
        self.settings = settings
        self.layout = layout

    # --- identity -------------------------------------------------------
    @abstractmethod
    def port_settings(self) -> dict[str, int]:
        """The settings fields naming this component's ports, with their values."""

    def address(self) -> str:
        return ", ".join(f"{HOST}:{port}" for port in self.port_settings().values())

    @property
    def pid_file(self):
        return self.layout.pid_file(self.name)

    @property
    def log_file(self):
        return self.layout.log_file(self.name)

    def record(self) -> ProcessRecord | None:
        return ProcessRecord.read(self.pid_file)

    def running(self) -> ProcessRecord | None:
        """The recorded process if it is still alive."""
        record = self.record()
        return record if record is not None and record.is_alive() else None

    @abstractmethod
    def owns(self, argv: list[str]) -> bool:
        """True if a process with this command line is this component of this stack."""

    def owns_process(self, pid: int) -> bool:
        """True if ``pid`` is (part of) this component of this stack."""
        return self.owns(process_cmdline(pid))

    # --- starting -------------------------------------------------------
    @abstractmethod
    def find_tools(self, path: str | None = None) -> list[MissingTool]:
        """Locate the programs this component needs; report the missing ones."""

    def dirs_for_other_users(self, accounts: Accounts) -> list[tuple[str, object]]:
        """(account name, path) pairs that another OS account must be able to reach."""
        return []

    @abstractmethod
    def prepare(self, accounts: Accounts) -> None:
        """Write config and do one-time setup (downloads, formatting) before the start."""

    @abstractmethod
    def command(self) -> list[str]:
        ...

    def run_as(self, accounts: Accounts) -> str | None:
        return None

    def clear_stale_state(self) -> None:
        """Remove what a crashed run left behind that would stop a new start."""

    def start(self, accounts: Accounts) -> ProcessRecord:
        record = spawn(
            self.command(),
            log_file=self.log_file,
            cwd=self.layout.root,
            user=self.run_as(accounts),
        )
        record.write(self.pid_file)
        return record

    # --- health ---------------------------------------------------------
    @abstractmethod
    def probe(self, timeout: float) -> None:
        """Talk to the server the way a client would; raise ProbeFailed if it does not answer."""

    def await_ready(self, record: ProcessRecord, deadline: float) -> None:
        """Probe until the server answers, it exits, or ``deadline`` (monotonic) passes."""
        self.poll_until(record, deadline, self.probe)

    def poll_until(self, record: ProcessRecord, deadline: float, check) -> None:
        """Call ``check(timeout)`` until it stops raising ProbeFailed; fail if the process dies."""
        while True:
            if not record.is_alive():
                raise self.failure("exited during startup")
            try:
                check(timeout=max(0.5, min(3.0, deadline - time.monotonic())))
                return
            except ProbeFailed as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise self.failure(f"did not pass its readiness check in time ({last})")
            time.sleep(0.2)

    def failure(self, what: str) -> StackError:
        return StackError(
            f"{self.name} {what}; log: {self.log_file}",
            component=self.name,
            log_tail=tail_of_last_start(self.log_file, ERROR_TAIL_LINES),
        )

    def log_tail(self, lines: int) -> str:
        return tail(self.log_file, lines)
