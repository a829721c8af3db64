"""Fault drills: the whole pipeline as real replicas on the local stack, faults while mail flows.

    .venv/bin/python bench/fault_drills.py --quick    # the CI subset (tests/drills): 30 mailboxes, 600 mails
    .venv/bin/python bench/fault_drills.py            # every drill: 3,000 mailboxes, 30,000 mails
        [--mailboxes N] [--mails N] [--drill-seconds S] [--interval S] [--seed N]

Needs the local stack (``mailintake stack up``) with the topics applied and the database
migrated. Real ``mailintake run <service>`` processes stand in for a cluster: 3 fetcher
replicas, 2 classifiers and 2 ticketers, each kind in a consumer group of its own for
this run (the classifier and ticketer groups placed at the end of their source topics
first), all on a new PostgreSQL schema that holds only this run's accounts, so the
fetchers poll only the drill's mailboxes and the ticketers write the drill's tickets.

Mail flows the whole time: new Dovecot users get mails through the stack's SMTP server
(dovecot-lda), each with its own Message-ID and subject, at a steady rate. The drills
run one after the other; each lets mail flow a while, injects its fault, and lets mail
flow on. A mail belongs to the drill during which it was injected. Faults:

- kill -9 of a random replica of each kind, restarted at once (as an orchestrator would);
- a restart of Kafka, of PostgreSQL, of Dovecot (``tests/stack_faults.py``), full mode only;
- a fetcher replica added, and one removed with SIGTERM.

A replica that exits by itself is started again, as Kubernetes would, and counted.
After the last drill the injection stops and the run waits until every mail is a ticket
step (or nothing moved for a while). The check is against the mails injected: each
must be exactly one ticket step and one ledger row (``ticket_steps``,
``processed_mails``) on exactly one ticket; none lost, none duplicated.

Time to recover: from the fault until the last of the drill's mails that the fault held
up became a ticket step. A mail is held up when it took longer from SMTP to ticket step
than 95 % of the mails of the first drill (no fault), plus 2 s. 0 means no mail was held up.

Dovecot's own log (``tests/peers/dovecot_sessions.py``) shows whether a mailbox ever had
two sessions at once, i.e. two replicas polling it across a rebalance.

Exits 1 when a mail was lost or duplicated, or a mailbox had two sessions at once.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# --- the pure core: which drills, what the check says, the table --------------------

STEADY = "steady flow"
HELD_UP_MARGIN_SECONDS = 2.0
"""Slack above the steady drill's usual end-to-end time before a mail counts as held up."""
CUSTOMERS = 50
"""Senders of the injected mails; each sends many, every one with a subject of its own."""


@dataclass(frozen=True)
class Drill:
    name: str
    fault: str
    """``none``, ``kill`` (kill -9 then restart), ``stack`` (restart a server),
    ``add`` (a new replica) or ``remove`` (SIGTERM, not restarted)."""
    target: str | None = None
    """The service (fetcher, classifier, ticketer) or stack component (kafka, postgres, dovecot)."""


def drill_plan(quick: bool) -> list[Drill]:
    """The drills in the order they run. The quick subset leaves out the stack restarts,
    which also disturb every other test sharing the stack."""
    plan = [
        Drill(STEADY, "none"),
        Drill("kill -9 fetcher", "kill", "fetcher"),
        Drill("kill -9 classifier", "kill", "classifier"),
        Drill("kill -9 ticketer", "kill", "ticketer"),
    ]
    if not quick:
        plan += [
            Drill("restart Kafka", "stack", "kafka"),
            Drill("restart PostgreSQL", "stack", "postgres"),
            Drill("restart Dovecot", "stack", "dovecot"),
        ]
    plan += [Drill("add a fetcher", "add", "fetcher"), Drill("remove a fetcher", "remove", "fetcher")]
    return plan


@dataclass(frozen=True)
class InjectedMail:
    message_id: str
    subject: str
    drill: str
    injected_at: float
    """time.monotonic() when the SMTP server accepted it (dovecot-lda had delivered it)."""


@dataclass(frozen=True)
class TicketStep:
    """An inbound ticket step as PostgreSQL holds it, and when the drill first saw it."""

    message_id: str
    ticket_number: int
    seen_at: float | None = None


@dataclass(frozen=True)
class MailCheck:
    mails_in: int
    tickets_out: int
    steps_out: int
    lost: tuple[str, ...]
    """Message-IDs with no ticket step."""
    duplicated: tuple[str, ...]
    """Message-IDs with more than one step, ledger row or ticket."""


def check_mails(
    injected: Iterable[InjectedMail],
    steps: Iterable[TicketStep],
    ledger: Iterable[str],
    tickets: Mapping[int, str],
) -> MailCheck:
    """Each injected mail must be exactly one step, one ledger row and one ticket.

    ``ledger`` holds the Message-ID of every ``processed_mails`` row; ``tickets`` maps
    every ticket's number to its subject (each injected mail has a subject of its own,
    so a second ticket opened for a mail is found even when it holds no step).
    """
    mails = {mail.message_id: mail for mail in injected}
    steps_of: Counter[str] = Counter()
    tickets_of: dict[str, set[int]] = defaultdict(set)
    for step in steps:
        steps_of[step.message_id] += 1
        tickets_of[step.message_id].add(step.ticket_number)
    rows_of = Counter(ledger)
    by_subject = {mail.subject: mail.message_id for mail in mails.values()}
    for number, subject in tickets.items():
        if subject in by_subject:
            tickets_of[by_subject[subject]].add(number)
    lost = tuple(sorted(m for m in mails if steps_of[m] == 0))
    duplicated = tuple(
        sorted(m for m in mails if steps_of[m] > 1 or rows_of[m] > 1 or len(tickets_of[m]) > 1)
    )
    return MailCheck(
        mails_in=len(mails),
        tickets_out=len(set().union(*(tickets_of[m] for m in mails))) if mails else 0,
        steps_out=sum(steps_of[m] for m in mails),
        lost=lost,
        duplicated=duplicated,
    )


def held_up_threshold(steady_latencies: Sequence[float]) -> float:
    """End-to-end seconds above which a mail was held up: the steady drill's 95th
    percentile plus a margin (its first mails meet groups still settling after the start)."""
    ordered = sorted(steady_latencies)
    typical = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] if ordered else 0.0
    return typical + HELD_UP_MARGIN_SECONDS


def recovery_seconds(fault_at: float, mails: Iterable[tuple[float, float | None]], threshold: float) -> float | None:
    """Seconds from the fault until the last held-up mail became a ticket step.

    ``mails`` are (injected_at, seen_at) of one drill's mails, seen_at None for a mail
    never seen. None when a mail never arrived (the drill did not recover); 0.0 when no
    mail was held up.
    """
    held_up = []
    for injected_at, seen_at in mails:
        if seen_at is None:
            return None
        if seen_at - injected_at > threshold:
            held_up.append(seen_at)
    return max(0.0, max(held_up) - fault_at) if held_up else 0.0


@dataclass(frozen=True)
class DrillOutcome:
    drill: str
    check: MailCheck
    recovery: float | None
    """None when not every mail arrived; for the steady drill, its slowest mail's latency."""
    max_latency: float | None
    note: str = ""


def outcome_table(outcomes: Sequence[DrillOutcome], total: MailCheck) -> str:
    """A Markdown table, one row a drill and a total row."""

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f}"

    lines = [
        "| drill | mails in | tickets out | steps out | lost | duplicated | time to recover (s) | slowest mail (s) | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for outcome in outcomes:
        check = outcome.check
        lines.append(
            f"| {outcome.drill} | {check.mails_in} | {check.tickets_out} | {check.steps_out} | {len(check.lost)} "
            f"| {len(check.duplicated)} | {'-' if outcome.drill == STEADY else seconds(outcome.recovery)} "
            f"| {seconds(outcome.max_latency)} | {outcome.note} |"
        )
    lines.append(
        f"| **all** | {total.mails_in} | {total.tickets_out} | {total.steps_out} | {len(total.lost)} "
        f"| {len(total.duplicated)} | | | |"
    )
    return "\n".join(lines)


def drill_outcomes(
    plan: Sequence[Drill],
    injected: Sequence[InjectedMail],
    steps: Sequence[TicketStep],
    ledger: Sequence[str],
    tickets: Mapping[int, str],
    fault_times: Mapping[str, float],
    notes: Mapping[str, str],
) -> tuple[list[DrillOutcome], MailCheck]:
    """Every drill's outcome, and the check over all mails (a mail duplicated across
    drills shows only there)."""
    first_seen: dict[str, float] = {}
    for step in steps:
        if step.seen_at is not None:
            first_seen[step.message_id] = min(step.seen_at, first_seen.get(step.message_id, step.seen_at))

    def latencies(mails: Iterable[InjectedMail]) -> list[tuple[float, float | None]]:
        return [(m.injected_at, first_seen.get(m.message_id)) for m in mails]

    steady = [s - i for i, s in latencies(m for m in injected if m.drill == STEADY) if s is not None]
    threshold = held_up_threshold(steady)
    outcomes = []
    for drill in plan:
        mails = [m for m in injected if m.drill == drill.name]
        times = latencies(mails)
        seen = [s - i for i, s in times if s is not None]
        fault_at = fault_times.get(drill.name)
        recovery = recovery_seconds(fault_at, times, threshold) if fault_at is not None else None
        outcomes.append(
            DrillOutcome(
                drill=drill.name,
                check=check_mails(mails, steps, ledger, tickets),
                recovery=recovery,
                max_latency=None if len(seen) < len(times) else max(seen, default=0.0),
                note=notes.get(drill.name, ""),
            )
        )
    return outcomes, check_mails(injected, steps, ledger, tickets)


# --- the edges: processes, mail in, tickets out --------------------------------------


class Replica:
    """One ``mailintake run <service>`` child process with its own HTTP port and log file."""

    def __init__(self, service: str, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.service = service
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.wanted = False
        """Whether it should be running: the supervisor restarts a wanted replica that exited."""

    def start(self) -> None:
        from tests.ticketer.running_ticketer import free_port

        self.port = free_port()
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailintake", "run", self.service],
                env=self.env | {f"MAILINTAKE_{self.service.upper()}_HTTP_PORT": str(self.port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wanted = True

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def terminate(self, timeout: float = 90) -> int:
        """SIGTERM and wait: the replica finishes its work, commits and leaves its group."""
        self.wanted = False
        if not self.running():
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def log_tail(self, characters: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-characters:] if self.log_path.exists() else ""


class Replicas:
    """Every replica of the run; a thread restarts any that exits unasked, as an orchestrator would."""

    def __init__(self, env_of: Mapping[str, dict[str, str]], log_dir: Path, rng: random.Random) -> None:
        self._env_of = env_of
        self._log_dir = log_dir
        self._rng = rng
        self._lock = threading.Lock()
        self._numbers: Counter[str] = Counter()
        self.all: list[Replica] = []
        self.unasked_restarts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)

    def add(self, service: str) -> Replica:
        with self._lock:
            self._numbers[service] += 1
            replica = Replica(service, f"{service}-{self._numbers[service]}", self._env_of[service], self._log_dir)
            replica.start()
            self.all.append(replica)
        return replica

    def running(self, service: str) -> list[Replica]:
        return [r for r in self.all if r.service == service and r.wanted]

    def pick(self, service: str) -> Replica:
        return self._rng.choice(self.running(service))

    def kill_and_restart(self, service: str) -> Replica:
        with self._lock:
            replica = self.pick(service)
            replica.kill()
            replica.start()
        return replica

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for replica in [r for r in self.all if r.wanted]:
            while not replica.ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{replica.name} not ready after {timeout:.0f} s\n{replica.log_tail()}")
                time.sleep(0.3)

    def start_supervising(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                for replica in self.all:
                    if replica.wanted and not replica.running():
                        self.unasked_restarts[replica.service] += 1
                        print(f"  {replica.name} exited ({replica.process.returncode}); starting it again", flush=True)
                        replica.start()

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every replica at once; their exit codes."""
        self._stop.set()
        self._thread.join(5)
        wanted = [r for r in self.all if r.wanted]
        for replica in wanted:
            replica.wanted = False
            if replica.running():
                replica.process.send_signal(signal.SIGTERM)
        codes = {}
        for replica in wanted:
            try:
                codes[replica.name] = replica.process.wait(90)
            except subprocess.TimeoutExpired:
                replica.kill()
                codes[replica.name] = -9
        return codes


class Injector:
    """Delivers mails through the stack's SMTP server at a steady rate, into random mailboxes.

    One schedule for all sessions: mail k is due ``k / rate`` seconds after the start, and
    the next free session sends the next mail due. A delivery (one dovecot-lda process in
    the relay) takes longer than the spacing on a loaded machine, so several sessions
    deliver at once; when they fall behind (a slow spell, a relay or Dovecot restart) they
    send back to back until they are on schedule again, as an MTA flushes its queue, so
    the planned number of mails goes in unless the relay cannot take the rate at all.

    A delivery that fails (Dovecot or the relay restarting) is retried with the same
    Message-ID; if the failed attempt had in fact delivered it, the fetcher sees the
    mail twice and the ticketer's ledger must keep it to one step.
    """

    def __init__(self, endpoints, users: Sequence, rate: float, limit: int, connections: int) -> None:
        self._endpoints = endpoints
        self._users = users
        self._spacing = 1.0 / rate
        self._limit = limit
        self.drill = STEADY
        self.mails: list[InjectedMail] = []
        self.retries = 0
        self.most_behind = 0.0
        """The largest lag behind the schedule a mail was sent with, in seconds."""
        self._started_at = 0.0
        self._taken = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(connections)]

    def start(self) -> None:
        self._started_at = time.monotonic()
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(60)

    def behind(self) -> int:
        """Mails due by now that no session has taken yet."""
        with self._lock:
            due = min(self._limit, int((time.monotonic() - self._started_at) / self._spacing) + 1)
            return max(0, due - self._taken)

    def _connect(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self._endpoints.host, self._endpoints.smtp_port, timeout=30)
        smtp.starttls(context=ssl.create_default_context(cafile=str(self._endpoints.ca_file)))
        smtp.login(self._users[0].name, self._users[0].password)
        return smtp

    def _take_one(self) -> float | None:
        """When the next mail is due (time.monotonic()), or None once every planned mail is taken."""
        with self._lock:
            if self._taken >= self._limit:
                return None
            due = self._started_at + self._taken * self._spacing
            self._taken += 1
            return due

    def _run(self, worker: int) -> None:
        rng = random.Random(worker)
        smtp: smtplib.SMTP | None = None
        while not self._stop.is_set():
            due = self._take_one()
            if due is None:
                break
            self._stop.wait(max(0.0, due - time.monotonic()))
            if self._stop.is_set():
                break
            lag = time.monotonic() - due
            user = rng.choice(self._users)
            token = uuid.uuid4().hex
            drill = self.drill
            message = EmailMessage()
            message["From"] = f"customer-{rng.randrange(CUSTOMERS)}@drills.test"
            message["To"] = user.address
            message["Subject"] = f"drill {token}"
            message["Message-ID"] = f"<{token}@drills.test>"
            message.set_content(f"Mail {token} of the drill {drill!r}.")
            delivered = False
            while not delivered and not self._stop.is_set():
                try:
                    if smtp is None:
                        smtp = self._connect()
                    smtp.sendmail(message["From"], [user.address], message.as_bytes())
                    delivered = True
                except (OSError, smtplib.SMTPException):
                    self.retries += 1
                    if smtp is not None:
                        try:
                            smtp.close()
                        except OSError:
                            pass
                    smtp = None
                    self._stop.wait(0.5)
            if delivered:
                with self._lock:
                    self.most_behind = max(self.most_behind, lag)
                    self.mails.append(InjectedMail(message["Message-ID"], message["Subject"], drill, time.monotonic()))
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass

LOOK_BACK_STEPS = 2000


class StepWatch:
    """Polls PostgreSQL for new inbound ticket steps and notes when each was first seen."""

    def __init__(self, database_url: str) -> None:
        from mailintake.database import engine_for

        self._engine = engine_for(database_url)
        self.seen: dict[str, float] = {}
        self.errors = 0
        self._last_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="step-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from sqlalchemy import text

        while not self._stop.wait(0.5):
            try:
                with self._engine.connect() as connection:
                    rows = connection.execute(
                        text(
                            "SELECT id, message_id FROM ticket_steps WHERE id > :low AND direction = 'inbound'"
                        ),
                        # Ids come from a sequence but two ticketers commit out of id order:
                        # look back further than two batches in flight.
                        {"low": self._last_id - LOOK_BACK_STEPS},
                    ).all()
            except Exception:  # noqa: BLE001 - PostgreSQL restarting is one of the drills
                self.errors += 1
                continue
            now = time.monotonic()
            for row in rows:
                self._last_id = max(self._last_id, row.id)
                self.seen.setdefault(row.message_id, now)

    def final_state(self) -> tuple[list[TicketStep], list[str], dict[int, str]]:
        """Every inbound step, ledger row and ticket in the schema."""
        from sqlalchemy import text

        with self._engine.connect() as connection:
            steps = [
                TicketStep(row.message_id, row.ticket_number, self.seen.get(row.message_id))
                for row in connection.execute(
                    text("SELECT message_id, ticket_number FROM ticket_steps WHERE direction = 'inbound'")
                )
            ]
            ledger = [row.message_id for row in connection.execute(text("SELECT message_id FROM processed_mails"))]
            tickets = {row.number: row.subject for row in connection.execute(text("SELECT number, subject FROM tickets"))}
        return steps, ledger, tickets


# --- one run ---------------------------------------------------------------------------


@dataclass
class DrillConfig:
    quick: bool
    mailboxes: int
    mails: int
    drill_seconds: float
    """How long each drill lets mail flow; its fault comes after a quarter of it."""
    interval: int
    seed: int = 7
    fetchers: int = 3
    classifiers: int = 2
    ticketers: int = 2
    session_timeout: float = 6.0
    settle_seconds: float = 60.0
    """After the last drill, how long the run waits with no new ticket step before calling the rest lost."""
    connections: int = 2
    log_dir: Path | None = None

    @classmethod
    def for_mode(cls, quick: bool, **overrides) -> DrillConfig:
        if quick:
            values = dict(mailboxes=30, mails=600, drill_seconds=16.0, interval=5, settle_seconds=45.0)
        else:
            values = dict(mailboxes=3000, mails=30000, drill_seconds=300.0, interval=60, connections=48, settle_seconds=120.0)
        return cls(quick=quick, **(values | {k: v for k, v in overrides.items() if v is not None}))


@dataclass
class DrillRun:
    outcomes: list[DrillOutcome]
    total: MailCheck
    table: str
    seconds: float
    mail_sessions: int
    """Dovecot sessions of the run's mailboxes (all of them the fetchers': mail comes in through dovecot-lda)."""
    overlapping_sessions: int
    """Pairs of those sessions open at the same time on one mailbox: two replicas polling it at once."""
    notes: list[str] = field(default_factory=list)


def run_drills(config: DrillConfig) -> DrillRun:
    import tempfile

    from mailintake.contracts.records import TicketOptions
    from mailintake.database import engine_for
    from mailintake.local_environment import service_environment
    from mailintake.runtime.settings import load_settings
    from mailintake.stack import Stack
    from mailintake.stack.mail_users import MailUser, set_users
    from services.fetcher.account import Account
    from services.fetcher.account_store import AccountStore
    from services.fetcher.password_cipher import cipher_from_settings
    from services.fetcher.settings import AccountEncryptionSettings
    from tests.database_schemas import migrated_schema
    from tests.peers.dovecot_sessions import overlapping, sessions
    from tests.stack_faults import restart
    from tests.ticketer.running_ticketer import delete_group_and_topics, place_group_at_end

    started = time.monotonic()
    started_at = datetime.now()  # local time, as Dovecot's log writes it
    stack = Stack()
    endpoints = stack.up()
    os.environ.update(service_environment(endpoints))
    rng = random.Random(config.seed)
    run_id = uuid.uuid4().hex[:8]
    users = [MailUser(f"drill{run_id}-{n:04d}", f"pw-{run_id}-{n}") for n in range(config.mailboxes)]
    # One write of the passwd-file: one wait for Dovecot to notice instead of one per user.
    set_users(stack.layout.mail_users_file, {u.name: u.password for u in users}, replace_existing=False)
    accounts = [
        Account(
            id=f"drill-{u.name}", name=f"Drill {u.name}", host=endpoints.host, port=endpoints.imaps_port,
            security="tls", ca_file=endpoints.ca_file, username=u.name, password=u.password,
            poll_interval_seconds=config.interval,
            # Senders become users: two ticketers race to create the same customer.
            ticket_options=TicketOptions(create_user_from_local_part=True, create_location_from_domain=True),
        )
        for u in users
    ]
    plan = drill_plan(config.quick)
    log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="fault-drills-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(plan)} drills, {config.mailboxes} mailboxes (poll interval {config.interval} s), {config.mails} mails, "
        f"{config.fetchers} fetchers, {config.classifiers} classifiers, {config.ticketers} ticketers; logs in {log_dir}",
        flush=True,
    )
    groups = {service: f"drills-{run_id}-{service}" for service in ("fetcher", "classifier", "ticketer")}
    notes: dict[str, str] = {}
    fault_times: dict[str, float] = {}
    with migrated_schema(endpoints.database_url, "fault_drills") as database_url:
        cipher = cipher_from_settings(load_settings(AccountEncryptionSettings))
        AccountStore(engine_for(database_url), cipher).import_accounts(accounts)
        place_group_at_end(endpoints.kafka_bootstrap, groups["classifier"], "mail.raw")
        place_group_at_end(endpoints.kafka_bootstrap, groups["ticketer"], "mail.classified")
        base = dict(os.environ)
        session = str(config.session_timeout)
        env_of = {
            "fetcher": base | {
                "MAILINTAKE_FETCHER_DATABASE_URL": database_url,
                "MAILINTAKE_FETCHER_GROUP_ID": groups["fetcher"],
                "MAILINTAKE_FETCHER_MAILBOX_OWNERSHIP": "consumer_group",
                "MAILINTAKE_FETCHER_SESSION_TIMEOUT_SECONDS": session,
                "MAILINTAKE_FETCHER_TIMEOUT_SECONDS": "10",
            },
            # The classifier reads claim-checked mails from the fetchers' database.
            "classifier": base | {
                "MAILINTAKE_CLASSIFIER_DATABASE_URL": database_url,
                "MAILINTAKE_CLASSIFIER_GROUP_ID": groups["classifier"],
            },
            "ticketer": base | {
                "MAILINTAKE_TICKETER_DATABASE_URL": database_url,
                "MAILINTAKE_TICKETER_GROUP_ID": groups["ticketer"],
                "MAILINTAKE_TICKETER_SESSION_TIMEOUT_SECONDS": session,
            },
        }
        replicas = Replicas(env_of, log_dir, rng)
        flow_seconds = len(plan) * config.drill_seconds
        injector = Injector(endpoints, users, config.mails / flow_seconds, config.mails, config.connections)
        watch = StepWatch(database_url)
        try:
            for service, count in (("ticketer", config.ticketers), ("classifier", config.classifiers), ("fetcher", config.fetchers)):
                for _ in range(count):
                    replicas.add(service)
            replicas.wait_ready(180)
            replicas.start_supervising()
            print(f"replicas ready after {time.monotonic() - started:.0f} s", flush=True)
            watch.start()
            injector.start()
            for drill in plan:
                injector.drill = drill.name
                drill_started = time.monotonic()
                time.sleep(config.drill_seconds / 4)
                fault_times[drill.name] = time.monotonic()
                notes[drill.name] = apply_fault(drill, replicas, restart)
                print(f"{drill.name}: {notes[drill.name]}; {len(injector.mails)} mails in, {injector.behind()} behind schedule", flush=True)
                time.sleep(max(0.0, drill_started + config.drill_seconds - time.monotonic()))
            injector.stop()
            print(
                f"injected {len(injector.mails)} of {config.mails} mails ({injector.retries} deliveries retried, "
                f"at most {injector.most_behind:.1f} s behind schedule)",
                flush=True,
            )
            wait_until_seen(watch, injector.mails, config.settle_seconds)
        finally:
            injector.stop()
            watch.stop()
            codes = replicas.stop_all()
            steps, ledger, tickets = watch.final_state()
            for group in groups.values():
                delete_group_and_topics(endpoints.kafka_bootstrap, group)
    outcomes, total = drill_outcomes(plan, injector.mails, steps, ledger, tickets, fault_times, notes)
    names = {u.name for u in users}
    found = [s for s in sessions(endpoints.state_dir / "logs" / "dovecot.log", started_at) if s.user in names]
    # overlapping() leaves out a login whose mail process logged nothing: it never opened
    # the mailbox (seen while Dovecot restarted). Reported apart.
    overlaps = overlapping(found)
    unopened = sum(not s.opened for s in found)
    unended = sum(s.opened and s.ended is None for s in found)
    run_notes = [
        f"Dovecot sessions of the drill's mailboxes: {len(found)} ({unopened} logins the mail process never served, "
        f"{unended} served with no end logged), two at once on one mailbox: {len(overlaps)}"
    ]
    run_notes += [f"  {a.user}: {a.started} to {a.ended} and {b.started} to {b.ended}" for a, b in overlaps[:5]]
    run_notes.append(f"replicas that exited unasked and were started again: {dict(replicas.unasked_restarts) or 'none'}")
    run_notes.append(f"exit codes at the end (SIGTERM): {codes}")
    run_notes.append(
        f"mails injected: {len(injector.mails)} of {config.mails} planned, at most {injector.most_behind:.1f} s behind "
        f"schedule; SMTP deliveries retried: {injector.retries}; step-watch read errors: {watch.errors}"
    )
    return DrillRun(
        outcomes, total, outcome_table(outcomes, total), time.monotonic() - started, len(found), len(overlaps), run_notes
    )


def apply_fault(drill: Drill, replicas: Replicas, restart_component) -> str:
    """Inject ``drill``'s fault; a short note of what was done."""
    if drill.fault == "none":
        return "no fault"
    if drill.fault == "kill":
        replica = replicas.kill_and_restart(drill.target)
        return f"killed {replica.name} (SIGKILL), started it again"
    if drill.fault == "stack":
        away = restart_component(drill.target)
        return f"{drill.target} away {away:.1f} s"
    if drill.fault == "add":
        replica = replicas.add(drill.target)
        return f"added {replica.name}"
    if drill.fault == "remove":
        replica = replicas.pick(drill.target)
        code = replica.terminate()
        return f"stopped {replica.name} (SIGTERM, exit {code})"
    raise ValueError(f"unknown fault {drill.fault!r}")


def wait_until_seen(watch: StepWatch, mails: Sequence[InjectedMail], settle_seconds: float) -> None:
    """Until every mail is a ticket step, or no new one came for ``settle_seconds``."""
    wanted = {m.message_id for m in mails}
    last_count, last_change = -1, time.monotonic()
    while True:
        count = len(wanted & watch.seen.keys())
        if count == len(wanted):
            return
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > settle_seconds:
            print(f"{len(wanted) - count} mails never became ticket steps", flush=True)
            return
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the CI subset: kill -9 of each kind, add and remove a fetcher; small")
    parser.add_argument("--mailboxes", type=int, help="Dovecot mailboxes (quick 30, full 3000)")
    parser.add_argument("--mails", type=int, help="mails injected over all drills (quick 600, full 30000)")
    parser.add_argument("--drill-seconds", type=float, help="seconds of mail flow per drill (quick 16, full 300)")
    parser.add_argument("--interval", type=int, help="poll interval of every mailbox (quick 5, full 60)")
    parser.add_argument("--connections", type=int, help="SMTP sessions injecting mail at once (quick 2, full 48)")
    parser.add_argument("--seed", type=int, default=7, help="picks the replicas killed or removed")
    parser.add_argument("--log-dir", type=Path, help="where the replicas' logs go (default: a new temporary folder)")
    args = parser.parse_args(argv)
    config = DrillConfig.for_mode(
        args.quick, mailboxes=args.mailboxes, mails=args.mails, drill_seconds=args.drill_seconds,
        interval=args.interval, connections=args.connections, seed=args.seed, log_dir=args.log_dir,
    )
    result = run_drills(config)
    print(result.table)
    for note in result.notes:
        print(note)
    print(f"ran {result.seconds:.0f} s; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if result.total.lost or result.total.duplicated or result.overlapping_sessions:
        print(f"lost: {list(result.total.lost)[:10]}\nduplicated: {list(result.total.duplicated)[:10]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
