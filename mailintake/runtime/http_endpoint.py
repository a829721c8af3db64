"""The /metrics, /livez and /readyz endpoint of a service, served from a daemon thread.

Liveness says the process loop still turns (it ticks :meth:`Health.beat`); readiness says
its dependencies answered at least once since start (:meth:`Health.set_ready`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app


@dataclass
class Health:
    """Liveness and readiness as the service loop reports them."""

    stall_after_seconds: float = 120.0
    _last_beat: float = field(default_factory=time.monotonic)
    _ready: bool = False
    _not_ready_reason: str = "starting"

    def beat(self) -> None:
        self._last_beat = time.monotonic()

    def set_ready(self, ready: bool, reason: str = "") -> None:
        self._ready = ready
        self._not_ready_reason = reason

    def live(self) -> tuple[bool, str]:
        stalled_for = time.monotonic() - self._last_beat
        if stalled_for > self.stall_after_seconds:
            return False, f"loop stalled for {stalled_for:.0f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        return self._ready, "ok" if self._ready else self._not_ready_reason


class _QuietHandler(WSGIRequestHandler):
    # Probes hit this every few seconds; access lines would drown the JSON logs.
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


def _app(health: Health) -> Callable:
    metrics = make_wsgi_app()

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/livez", "/readyz"):
            ok, reason = health.live() if path == "/livez" else health.ready()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [reason.encode() + b"\n"]
        if path == "/metrics":
            return metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def serve_http_endpoint(host: str, port: int, health: Health) -> WSGIServer:
    """Start the endpoint on ``host:port`` (0 = any free port) and return the server;
    ``server.server_port`` is the bound port."""
    server = make_server(host, port, _app(health), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="http-endpoint", daemon=True).start()
    return server
