"""Start one service process: settings, logs, the HTTP endpoint, signals, then its loop."""

from __future__ import annotations

import signal
import threading
from typing import Callable

import structlog
from pydantic_settings import BaseSettings

from mailintake.runtime.garbage_collection import tune_for_streaming
from mailintake.runtime.http_endpoint import Health, serve_http_endpoint
from mailintake.runtime.logs import configure_logging
from mailintake.runtime.settings import ProcessSettings, load_settings


def run_service(
    name: str,
    settings_cls: type[ProcessSettings],
    loop: Callable[[BaseSettings, Health, threading.Event], None],
    prepare: Callable[[ProcessSettings], None] | None = None,
) -> None:
    """Run ``loop`` until SIGTERM or SIGINT; raise :class:`InvalidSettings` on a bad setting.

    On a signal the loop is asked to stop; it finishes its batch, commits and leaves its
    consumer group, which hands its partitions to the other replicas at once.
    """
    settings = load_settings(settings_cls)
    configure_logging(name, settings.log_level)
    log = structlog.get_logger(name)
    health = Health()
    server = serve_http_endpoint(settings.http_host, settings.http_port, health)
    log.info("service.starting", http=f"http://{settings.http_host}:{server.server_port}")
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("service.stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if prepare is not None:
            prepare(settings)
        tune_for_streaming()
        loop(settings, health, stop)
    finally:
        server.shutdown()
        log.info("service.stopped")
