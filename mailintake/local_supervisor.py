"""`mailintake run all`: the pipeline services and the sender as separate processes, for the local default.

It stands in for the orchestrator: a service that exits is restarted after a short,
growing delay, as Kubernetes would; SIGTERM/SIGINT stop all of them gracefully.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import structlog

SERVICES = ("fetcher", "classifier", "ticketer", "sender")
GRACE_SECONDS = 20.0

log = structlog.get_logger("supervisor")


@dataclass
class Child:
    name: str
    process: subprocess.Popen | None = None
    restarts: int = 0
    restart_at: float = 0.0
    started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "mailintake", "run", self.name], env=env)
        self.started_at = time.monotonic()
        log.info("service.spawned", service=self.name, pid=self.process.pid)


def supervise(env_overrides: dict[str, str], services: tuple[str, ...] = SERVICES) -> int:
    env = {**os.environ, **env_overrides}
    children = [Child(name) for name in services]
    for child in children:
        child.start(env)
    stopping = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    while not stopping:
        time.sleep(0.5)
        for child in children:
            if child.process is not None and child.process.poll() is not None:
                code = child.process.returncode
                # A child that ran a while before dying gets its delay reset.
                child.restarts = 0 if time.monotonic() - child.started_at > 60 else child.restarts + 1
                delay = min(2 ** child.restarts, 30)
                log.error("service.exited", service=child.name, code=code, restart_in_seconds=delay)
                child.process, child.restart_at = None, time.monotonic() + delay
            elif child.process is None and time.monotonic() >= child.restart_at:
                child.start(env)
    for child in children:
        if child.process is not None and child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + GRACE_SECONDS
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("service.killed", service=child.name, reason=f"did not stop within {GRACE_SECONDS:.0f}s")
            child.process.kill()
            child.process.wait()
    return 0
