"""Structured JSON logs for every service.

Logs carry context such as ``account_id`` and ``message_id`` bound with
:func:`structlog.contextvars.bind_contextvars`. Secrets never reach the output: values
of type ``SecretStr`` and keys that name a secret are replaced before rendering.
"""

from __future__ import annotations

import collections
import functools
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import structlog
from pydantic import SecretStr

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|credential|api_?key|authorization", re.IGNORECASE)
REDACTED = "**********"


@functools.lru_cache(maxsize=4096)
def _names_a_secret(key: str) -> bool:
    # Cached: the same few keys come with every line, and the search per key was a third
    # of the cost of a log line (the ticketer writes one per mail at INFO).
    return _SECRET_KEY.search(key) is not None


def redact_secrets(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: drop secret values, whatever their key or type."""
    for key, value in event.items():
        if isinstance(value, SecretStr) or (value is not None and _names_a_secret(key)):
            event[key] = REDACTED
    return event


class _CurrentStderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is written: test
    runners (Click's CliRunner, pytest) swap it and close the one they swapped in."""

    @property
    def stream(self):  # noqa: ANN201 - the base class's attribute, made dynamic
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # noqa: ANN001 - the base class assigns it once
        pass


def _print_to_current_stderr(*_args: object) -> structlog.PrintLogger:
    # Why not PrintLoggerFactory(file=sys.stderr): that keeps the stream of configure time.
    return structlog.PrintLogger(sys.stderr)


def configure_cli_logging() -> None:
    """Logging for a CLI command: warnings and errors as JSON on stderr, so a command's
    own output on stdout (``--json`` reports, exports) stays clean. Nothing is cached, so
    ``mailintake run`` can still configure its service's logging afterwards."""
    configure_logging("cli", "WARNING", cache=False)


THIRD_PARTY_LOGGERS = ("kafka", "aiokafka", "faust", "mode", "alembic")
"""Libraries' loggers that :func:`configure_logging` holds at WARNING or above."""


class RepeatedLibraryRecords(logging.Filter):
    """Lets a third-party library's record through once per ``window_seconds`` for each
    of its message templates; the next one let through says how many were held back.

    aiokafka tries a lost broker again without a pause (its metadata refresh fails at
    once on a refused connection, and the fetcher and the sender ask for the next at
    once): in a fault drill's 33 s Kafka restart one classifier logged 24,512 errors and
    one ticketer 28,721, thousands a second. The first of each kind still shows at once.

    Some libraries log formatted text rather than a template, so kinds can be endless;
    past :attr:`MAX_KINDS` the kinds not seen within the window are forgotten (with their
    counts), and if all were, every kind is.
    """

    MAX_KINDS = 1024

    def __init__(self, window_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_seconds = window_seconds
        self._clock = clock
        self._let_through_at: dict[tuple[str, object], float] = {}
        self._held: collections.Counter[tuple[str, object]] = collections.Counter()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.partition(".")[0] not in THIRD_PARTY_LOGGERS:
            return True
        kind = (record.name, record.msg)
        now = self._clock()
        with self._lock:
            last = self._let_through_at.get(kind)
            if last is not None and now - last < self.window_seconds:
                self._held[kind] += 1
                return False
            if last is None and len(self._let_through_at) >= self.MAX_KINDS:
                self._forget_before(now - self.window_seconds)
            self._let_through_at[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            record.msg = f"{record.msg} [{held} more like it in the {now - last:.0f} s before]"  # type: ignore[operator]
        return True

    def _forget_before(self, moment: float) -> None:
        stale = [kind for kind, at in self._let_through_at.items() if at < moment]
        if not stale:
            stale = list(self._let_through_at)
        for kind in stale:
            del self._let_through_at[kind]
            self._held.pop(kind, None)


def configure_logging(service: str, level: str = "INFO", *, cache: bool = True, stream: TextIO | None = None) -> None:
    """Send JSON lines to stderr, one per event, tagged with the service name.

    Records of third-party libraries (kafka-python, alembic, ...) go through the same
    processors, so every line on stderr is one JSON object. ``stream`` replaces stderr
    (benchmarks render the lines to /dev/null).
    """
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    handler = _CurrentStderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.addFilter(RepeatedLibraryRecords())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party clients log every reconnect at INFO; keep their warnings only.
    for noisy in THIRD_PARTY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_print_to_current_stderr if stream is None else structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=cache,
    )
    structlog.contextvars.bind_contextvars(service=service)
