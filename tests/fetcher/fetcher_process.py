"""Run the real Fetcher on the accounts of one JSON file, as its own process.

The crash and restart tests kill this process with SIGKILL at random points; running
it on an explicit account list keeps it away from accounts other tests stored.
Usage: python -m tests.fetcher.fetcher_process ACCOUNTS.json  (settings from the environment)
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.logs import configure_logging
from mailintake.runtime.settings import load_settings
from services.fetcher.account import Account
from services.fetcher.service import Fetcher
from services.fetcher.settings import FetcherSettings


def main(path: str) -> None:
    configure_logging("fetcher")
    accounts = [Account.model_validate(entry) for entry in json.loads(Path(path).read_text())]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    Fetcher(load_settings(FetcherSettings), accounts).run(Health(), stop)


if __name__ == "__main__":
    main(sys.argv[1])
