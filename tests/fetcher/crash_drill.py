"""The machinery of the kill -9 drills, whatever the protocol: the real Fetcher as its own
process on the stack, and trials that kill it at random points of a fetch."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path


def start_fetcher(accounts_file: Path, stack, env: Mapping[str, str] = (), *args: str) -> subprocess.Popen:
    """``tests.fetcher.fetcher_process`` on ``accounts_file`` (more arguments after it), with the stack's settings."""
    environment = {
        **os.environ,
        "MAILINTAKE_FETCHER_KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap,
        "MAILINTAKE_FETCHER_DATABASE_URL": stack.database_url,
        **dict(env),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fetcher.fetcher_process", str(accounts_file), *args],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def kill_during_fetch(
    *,
    trials: int,
    rng: random.Random,
    start: Callable[[], subprocess.Popen],
    progress: Callable[[], int],
    total: int,
    after_kill: Callable[[int], None],
) -> list[int]:
    """Start the fetcher, let it make some progress (mails acted on at the server), kill -9
    it at a random moment, check; ``trials`` times or until everything is done.

    Returns how far each trial got before its kill.
    """
    kills = []
    for trial in range(trials):
        before = progress()
        if before >= total:
            break
        process = start()
        # Kill once the fetcher has made some progress, at a random moment inside its cycle.
        target = before + rng.randint(1, 60)
        deadline = time.monotonic() + 60
        while progress() < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.1))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        after_kill(trial)
        kills.append(progress() - before)
    return kills
