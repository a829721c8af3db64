"""One Graph poll of a full folder, against the Graph stub with a round-trip time added to
every request, with one request per mailbox in flight and with four.

    .venv/bin/python bench/graph_poll.py [--mails 1000] [--latency-ms 50] [--rounds 3]

Needs the local stack (``mailintake stack up``) with the topics applied and the database
migrated. The stub (``tests/peers/graph_stub``) answers on loopback in this process; its
own work per request is a fraction of a millisecond, so the added latency stands for the
round trip to Microsoft 365 and the service's time, which dominate a real poll. Each
round polls a fresh account id on a folder of ``--mails`` mails of about 5 KB: the real
``Fetcher.poll`` (delta pages of 100, ``$value`` per mail, produce with acks=all to the
real ``mail.raw``, ``PATCH isRead`` per mail, marks and deltaLink in PostgreSQL).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailintake.database.migrate import upgrade  # noqa: E402
from mailintake.runtime.logs import configure_logging  # noqa: E402
from mailintake.stack.endpoints import Endpoints  # noqa: E402
from mailintake.stack.layout import StackLayout  # noqa: E402
from mailintake.stack.settings import StackSettings  # noqa: E402
from services.fetcher.account import Account  # noqa: E402
from services.fetcher.service import Fetcher  # noqa: E402
from services.fetcher.settings import FetcherSettings  # noqa: E402
from tests.peers.graph_stub import GraphStub, StubTenant, received_sequence  # noqa: E402


class IssuedToken:
    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token

    refresh = token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    # The service's JSON logs, rendered as in production, to /dev/null.
    configure_logging("fetcher", stream=open(os.devnull, "w"))  # noqa: SIM115 - open for the whole run
    settings = StackSettings()
    endpoints = Endpoints.of(settings)
    upgrade(endpoints.database_url)
    layout = StackLayout(settings.state_dir)
    stub = GraphStub(StubTenant(), layout.server_cert, layout.server_key).start()
    body = ("Der Drucker im zweiten Stock meldet Papierstau. " * 100)[:5000]
    rates: dict[int, list[float]] = {1: [], 4: []}
    try:
        for round_number in range(args.rounds):
            for concurrency in (1, 4) if round_number % 2 == 0 else (4, 1):
                address = f"bench-{uuid.uuid4().hex[:8]}@example.test"
                box = stub.tenant.add_mailbox(address)
                for n, received in enumerate(received_sequence(args.mails)):
                    box.deliver(f"Subject: Papierstau {n}\r\nMessage-ID: <bench-{address}-{n}@example.org>\r\n\r\n{body}\r\n".encode(),
                                received=received)
                account = Account(
                    id=f"graph-bench-{uuid.uuid4().hex[:8]}", name="bench", protocol="graph", host="localhost", port=stub.port,
                    ca_file=endpoints.ca_file, username=address, authentication="oauth2_client_credentials",
                    oauth2={"provider": "oidc", "authority": "https://localhost/", "client_id": "bench", "client_secret": "s"},
                )
                token = stub.tokens.issue("bench-app", app_only=True)
                fetcher = Fetcher(
                    FetcherSettings(kafka_bootstrap_servers=endpoints.kafka_bootstrap, database_url=endpoints.database_url,
                                    graph_requests_per_mailbox=concurrency),
                    [account], bearer_tokens=lambda _, token=token: IssuedToken(token),
                )
                stub.latency = args.latency_ms / 1000
                started = time.perf_counter()
                produced = fetcher.poll(account)
                seconds = time.perf_counter() - started
                stub.latency = 0.0
                fetcher.close()
                assert produced == args.mails, f"{produced} of {args.mails} produced"
                rates[concurrency].append(args.mails / seconds)
                print(f"round {round_number + 1}, {concurrency} in flight: {args.mails} mails in {seconds:.1f} s,"
                      f" {args.mails / seconds:,.0f} mails/s", flush=True)
    finally:
        stub.stop()
    load = os.getloadavg()[0]
    print(f"median mails/s at {args.latency_ms:g} ms per request: 1 in flight {statistics.median(rates[1]):,.1f},"
          f" 4 in flight {statistics.median(rates[4]):,.1f} (load average {load:.1f})")


if __name__ == "__main__":
    main()
