"""Fixtures for the stack's own tests.

``local_stack`` brings up the default stack (settings from MAILINTAKE_STACK_*) and
leaves it running, as a developer would. ``isolated_settings`` gives a
throw-away state dir and free ports, for tests that break or stop things.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailintake.stack import Stack, StackSettings
from mailintake.stack.preflight import port_problem

#: Every port setting, so a component added later gets a free port too.
PORT_FIELDS = tuple(name for name in StackSettings.model_fields if name.endswith("_port"))


@pytest.fixture(scope="session")
def local_stack() -> Stack:
    stack = Stack(StackSettings())
    stack.up()
    return stack


def free_ports(count: int, avoid: set[int]) -> list[int]:
    """Ports free on 127.0.0.1, below the kernel's ephemeral range so clients do not grab them."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 32000)
        if port not in avoid and port not in ports and port_problem("test", "test_port", port) is None:
            ports.append(port)
    return ports


@pytest.fixture
def isolated_settings() -> Iterator[StackSettings]:
    # Not pytest's tmp_path: that lives under a 0700 directory which the
    # postgres, dovecot and mail accounts cannot enter when running as root.
    state_dir = Path(tempfile.mkdtemp(prefix="mi-stack-"))
    state_dir.chmod(0o755)
    avoid = set(StackSettings().ports().values())
    ports = dict(zip(PORT_FIELDS, free_ports(len(PORT_FIELDS), avoid), strict=True))
    settings = StackSettings(state_dir=state_dir, **ports)
    try:
        yield settings
    finally:
        Stack(settings).down()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def isolated_env(isolated_settings: StackSettings, monkeypatch: pytest.MonkeyPatch) -> StackSettings:
    """The isolated settings, also exported as MAILINTAKE_STACK_* for the CLI."""
    monkeypatch.setenv("MAILINTAKE_STACK_STATE_DIR", str(isolated_settings.state_dir))
    for field, port in isolated_settings.ports().items():
        monkeypatch.setenv(f"MAILINTAKE_STACK_{field.upper()}", str(port))
    return isolated_settings
