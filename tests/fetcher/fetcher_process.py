"""Run the real Fetcher on the accounts of one JSON file, as its own process.

The crash and restart tests kill this process with SIGKILL at random points; running
it on an explicit account list keeps it away from accounts other tests stored.
Usage: python -m tests.fetcher.fetcher_process ACCOUNTS.json [TOKENS.json]  (settings from the environment)

TOKENS.json maps account ids to bearer tokens the test issued at the Graph stub, for
the Graph accounts among them.
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


class IssuedToken:
    """One token issued by the test; a refresh has nothing newer to give."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token

    def refresh(self) -> str:
        return self._token


def main(path: str, tokens_path: str | None = None) -> None:
    configure_logging("fetcher")
    accounts = [Account.model_validate(entry) for entry in json.loads(Path(path).read_text())]
    tokens = json.loads(Path(tokens_path).read_text()) if tokens_path else {}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    fetcher = Fetcher(load_settings(FetcherSettings), accounts, bearer_tokens=lambda account: IssuedToken(tokens[account.id]))
    fetcher.run(Health(), stop)


if __name__ == "__main__":
    main(*sys.argv[1:3])
