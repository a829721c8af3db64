"""The local stack as a whole: up, down, status and logs over all components."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .component import Component, ProbeFailed
from .dovecot import Dovecot
from .endpoints import Endpoints
from .errors import StackError
from .kafka import Kafka
from .layout import StackLayout
from .mail_users import MailUser, set_users
from .oidc_provider import OidcProvider
from .os_accounts import Account, Accounts, resolve_accounts, unreachable_dir
from .postgres import Postgres
from .preflight import port_problem, raise_for_missing, raise_for_taken_ports
from .processes import (
    ProcessRecord,
    all_pids,
    kill_all,
    process_cmdline,
    session_members,
    signal_process,
    wait_gone,
)
from .settings import StackSettings
from .smtp import SmtpRelay
from .tls import ensure_certificates

COMPONENT_NAMES = ("postgres", "kafka", "oidc", "dovecot", "smtp")
#: Components serving the stack's certificate.
TLS_COMPONENTS = ("oidc", "dovecot", "smtp")


@dataclass(frozen=True)
class ComponentStatus:
    """How one component is doing: state is "running", "stopped" or "unhealthy"."""

    name: str
    state: str
    address: str
    pid: int | None
    detail: str = ""


def _say_nothing(message: str) -> None:
    pass


class Stack:
    """Kafka, PostgreSQL, the OpenID Connect provider, Dovecot and the SMTP relay of one state directory.

    ``up()`` is idempotent: what runs and answers is left alone, so calling
    it from every test session costs only the health checks.
    """

    def __init__(self, settings: StackSettings | None = None):
        self.settings = settings or StackSettings()
        self.layout = StackLayout.of(self.settings)
        self.components: dict[str, Component] = {
            component.name: component
            for component in (
                Postgres(self.settings, self.layout),
                Kafka(self.settings, self.layout),
                OidcProvider(self.settings, self.layout),
                Dovecot(self.settings, self.layout),
                SmtpRelay(self.settings, self.layout),
            )
        }

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints.of(self.settings)

    def component(self, name: str) -> Component:
        try:
            return self.components[name]
        except KeyError:
            raise StackError(f"no component {name!r}; choose one of: {', '.join(self.components)}") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise up/down of one state dir (parallel test workers call up() together)."""
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with open(self.layout.lock_file, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # --- up -------------------------------------------------------------
    def up(self, progress: Callable[[str], None] = _say_nothing) -> Endpoints:
        """Start whatever is not running, then check that every server answers.

        Raises StackError naming the component (with its log tail) on failure;
        servers that came up fine are left running.
        """
        with self._locked():
            if ensure_certificates(
                self.layout.ca_cert, self.layout.ca_key, self.layout.server_cert, self.layout.server_key
            ):
                # New (or renewed) certificate: TLS servers still running serve the old one.
                tls_servers = [c for c in self.components.values() if c.name in TLS_COMPONENTS and c.running()]
                if tls_servers:
                    progress("restarting TLS servers for the new certificate")
                    self._stop(tls_servers, progress)
            to_start = [c for c in self.components.values() if c.running() is None]
            started: dict[str, ProcessRecord] = {}
            if to_start:
                self._preflight(to_start)
                accounts = resolve_accounts(self.settings.mail_system_user, create=True)
                self._check_reachable(to_start, accounts)
                for directory in (self.layout.run_dir, self.layout.log_dir):
                    directory.mkdir(parents=True, exist_ok=True)
                for component in to_start:
                    progress(f"preparing {component.name}")
                    component.prepare(accounts)
                for component in to_start:
                    component.clear_stale_state()
                    progress(f"starting {component.name}")
                    started[component.name] = component.start(accounts)
            for component in self.components.values():
                record = started.get(component.name) or component.running()
                if record is None:
                    raise component.failure("is not running")
                deadline = time.monotonic() + self.settings.startup_timeout
                try:
                    component.await_ready(record, deadline)
                except StackError:
                    if component.name in started:
                        # A half-started server would hold its ports and confuse the next `up`.
                        self._stop([component])
                    raise
                progress(f"{component.name} ready at {component.address()}")
        return self.endpoints

    def _preflight(self, to_start: list[Component]) -> None:
        """Programs, then orphans, then ports: fail before anything starts."""
        missing = [item for component in to_start for item in component.find_tools()]
        raise_for_missing(missing)
        # A server of this stack whose pid file was lost still holds its
        # ports; it is ours, so stop it rather than call the port taken.
        orphans = self._orphans(to_start)
        if orphans:
            self._stop_pids(orphans, timeout=30)
        problems = []
        for component in to_start:
            for setting, port in component.port_settings().items():
                problem = port_problem(component.name, setting, port)
                if problem:
                    problems.append((component.name, problem))
        raise_for_taken_ports(problems)

    def _check_reachable(self, to_start: list[Component], accounts: Accounts) -> None:
        problems = []
        for component in to_start:
            for account_name, path in component.dirs_for_other_users(accounts):
                blocked = unreachable_dir(Account.named(account_name), path)
                if blocked is not None:
                    problems.append(
                        f"  {component.name}: the OS user {account_name!r} cannot enter {blocked}, so it cannot "
                        f"reach {path}: run `chmod o+x {blocked}` or set MAILINTAKE_STACK_STATE_DIR to a "
                        "directory others may traverse"
                    )
        if problems:
            raise StackError("cannot start the stack, nothing was started:\n" + "\n".join(problems))

    # --- down -----------------------------------------------------------
    def down(self, progress: Callable[[str], None] = _say_nothing) -> None:
        """Stop every server of this stack and make sure no process of it is left."""
        if not self.layout.root.exists():
            return
        with self._locked():
            self._stop(list(self.components.values()), progress)

    def _stop(self, components: list[Component], progress: Callable[[str], None] = _say_nothing) -> None:
        records = {c.name: c.record() for c in components}
        for component in components:
            record = records[component.name]
            if record is not None and record.is_alive():
                progress(f"stopping {component.name}")
                signal_process(record.pid, component.stop_signal)

        def leftovers() -> list[int]:
            pids = set(self._orphans(components))
            for record in records.values():
                if record is not None:
                    pids.update(session_members(record))
            pids.discard(os.getpid())
            return sorted(pids)

        timeout = max(c.stop_timeout for c in components)
        left = wait_gone(leftovers, timeout)
        if left:
            progress(f"killing {len(left)} process(es) that ignored the stop signal")
            kill_all(left)
            left = wait_gone(leftovers, 10)
        if left:
            raise StackError(f"processes of the stack are still running after SIGKILL: {left}")
        for component in components:
            component.pid_file.unlink(missing_ok=True)

    def _orphans(self, components: list[Component]) -> list[int]:
        """Live processes that are one of ``components`` of this stack but not in a pid file."""
        recorded = {r.pid for c in components if (r := c.record()) is not None and r.is_alive()}
        found = []
        for pid in all_pids():
            if pid in recorded or pid == os.getpid():
                continue
            if any(c.owns_process(pid) for c in components):
                found.append(pid)
        return found

    def _stop_pids(self, pids: list[int], timeout: float) -> None:
        for pid in pids:
            signal_process(pid, signal.SIGTERM)
        left = wait_gone(lambda: [p for p in pids if process_cmdline(p)], timeout)
        kill_all(left)

    # --- status and logs ------------------------------------------------
    def status(self, timeout: float = 3.0) -> list[ComponentStatus]:
        """Each component's state, checked with the same probes `up` uses."""
        result = []
        for component in self.components.values():
            record = component.running()
            if record is None:
                detail = ""
                for setting, port in component.port_settings().items():
                    problem = port_problem(component.name, setting, port)
                    if problem:
                        detail = problem
                        break
                result.append(ComponentStatus(component.name, "stopped", component.address(), None, detail))
                continue
            try:
                component.probe(timeout)
                result.append(ComponentStatus(component.name, "running", component.address(), record.pid))
            except ProbeFailed as exc:
                result.append(ComponentStatus(component.name, "unhealthy", component.address(), record.pid, str(exc)))
        return result

    def logs(self, component: str | None = None, lines: int = 40) -> dict[str, str]:
        """Log tails by component name (all components when ``component`` is None)."""
        names = [component] if component else list(self.components)
        return {name: self.component(name).log_tail(lines) for name in names}

    def add_mail_user(self, name: str, password: str) -> MailUser:
        """Create (or reset the password of) mailbox ``name``; Dovecot and SMTP see it at once."""
        set_users(self.layout.mail_users_file, {name: password}, replace_existing=True)
        return MailUser(name, password)


def add_mail_user(name: str, password: str, settings: StackSettings | None = None) -> MailUser:
    """Module-level shortcut for ``Stack(settings).add_mail_user(name, password)``."""
    return Stack(settings).add_mail_user(name, password)
