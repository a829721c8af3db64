"""Structured JSON logs for every service.

Logs carry context such as ``account_id`` and ``message_id`` bound with
:func:`structlog.contextvars.bind_contextvars`. Secrets never reach the output: values
of type ``SecretStr`` and keys that name a secret are replaced before rendering.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
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
