"""Faults injected into the shared local stack by the drills and restart tests."""

from __future__ import annotations

import os
import time

from mailintake.stack import Stack


def stop(component_name: str) -> None:
    """Stop one server of the local stack gracefully; ``Stack().up()`` starts it again."""
    component = Stack().component(component_name)
    record = component.running()
    assert record is not None, f"{component_name} is not running"
    os.kill(record.pid, component.stop_signal)
    deadline = time.monotonic() + component.stop_timeout
    while record.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not record.is_alive(), f"{component_name} did not stop"


def restart(component_name: str) -> float:
    """Stop one server of the local stack gracefully, start it again; return the seconds it was away."""
    started = time.monotonic()
    stop(component_name)
    Stack().up()
    return time.monotonic() - started
