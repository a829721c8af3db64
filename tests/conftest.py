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
    from mailintake.stack import Stack

    from mailintake.local_environment import service_environment

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
def unique() -> str:
    """A short id that keeps one test's accounts, users and groups apart from the others'."""
    return uuid.uuid4().hex[:10]


def pytest_collection_modifyitems(items):
    """Tests that restart servers of the shared stack run last, so they disturb no other test."""
    items.sort(key=lambda item: item.get_closest_marker("stack_restart") is not None)
