"""Fixtures on the real local stack (Kafka, PostgreSQL, Dovecot, SMTP).

``./dev test`` starts the stack first; the fixture calls the idempotent ``up()``
anyway so a test run from an IDE works too.
"""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture(scope="session")
def stack():
    import subprocess
    import sys

    from mailintake.database.migrate import upgrade
    from mailintake.local_environment import service_environment
    from mailintake.stack import Stack

    endpoints = Stack().up()
    # Services started by the tests inherit this, so any configured stack ports work.
    os.environ.update(service_environment(endpoints))
    subprocess.run(
        [sys.executable, "-m", "mailintake", "topics", "apply", "--bootstrap", endpoints.kafka_bootstrap],
        check=True, capture_output=True,
    )
    upgrade(endpoints.database_url)
    return endpoints


@pytest.fixture
def restored_logging():
    """``configure_logging`` rebinds the root handler (to this test's captured stderr,
    which pytest closes afterwards), structlog and the third-party loggers' levels for the
    whole process; later tests that log in-process get them back as they were."""
    import logging

    import structlog

    from mailintake.runtime.logs import THIRD_PARTY_LOGGERS

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, was in levels.items():
        logging.getLogger(name).setLevel(was)


@pytest.fixture
def unique() -> str:
    """A short id that keeps one test's accounts, users and groups apart from the others'."""
    return uuid.uuid4().hex[:10]


def pytest_collection_modifyitems(items):
    """Tests that restart servers of the shared stack run last, so they disturb no other test."""
    items.sort(key=lambda item: item.get_closest_marker("stack_restart") is not None)
