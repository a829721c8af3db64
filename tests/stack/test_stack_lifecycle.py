"""Starting, crashing and stopping a separate stack (own state dir and ports)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time

import pytest
from typer.testing import CliRunner

from mailintake.cli import app
from mailintake.stack import COMPONENT_NAMES, Stack, StackError, StackSettings
from mailintake.stack.preflight import port_problem
from mailintake.stack.processes import all_pids, process_cmdline

pytestmark = pytest.mark.stack


def _nothing_started(settings: StackSettings) -> None:
    run_dir = settings.state_dir / "run"
    assert not run_dir.exists() or not list(run_dir.iterdir())
    state = str(settings.state_dir)
    assert not [pid for pid in all_pids() if any(state in arg for arg in process_cmdline(pid))]


def test_taken_port_is_named_with_its_component_before_anything_starts(isolated_env: StackSettings):
    port = isolated_env.imaps_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = CliRunner().invoke(app, ["stack", "up"])
    assert result.exit_code == 1
    assert f"port {port} (dovecot)" in result.output
    assert "MAILINTAKE_STACK_IMAPS_PORT" in result.output
    _nothing_started(isolated_env)


def test_missing_java_names_the_package(isolated_settings: StackSettings, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java, no mvn
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(StackError) as caught:
        Stack(isolated_settings).up()
    assert "Java 17 not found on PATH: install openjdk-17-jre-headless" in str(caught.value)
    assert "install maven" in str(caught.value)
    _nothing_started(isolated_settings)


def test_settings_are_frozen_documented_and_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("MAILINTAKE_STACK_SMTP_PORT", "12525")
    settings = StackSettings()
    assert settings.smtp_port == 12525
    assert settings.state_dir.is_absolute()
    with pytest.raises(ValueError):
        settings.smtp_port = 1  # type: ignore[misc]
    assert all(field.description for field in StackSettings.model_fields.values())
    with pytest.raises(ValueError, match="both set to port"):
        StackSettings(imap_port=12000, pop3_port=12000)


def test_up_recovers_from_kill_9_and_down_leaves_nothing(isolated_env: StackSettings):
    stack = Stack(isolated_env)
    stack.up()
    assert {s.state for s in stack.status()} == {"running"}

    # Crash every server: pid files, postmaster.pid and master.pid go stale.
    for component in stack.components.values():
        os.kill(component.running().pid, signal.SIGKILL)
    time.sleep(0.2)
    assert {s.state for s in stack.status()} == {"stopped"}
    assert (isolated_env.state_dir / "postgres" / "data" / "postmaster.pid").exists()

    stack.up()
    assert {s.state for s in stack.status()} == {"running"}

    # A lost TLS directory means a new CA: the TLS servers restart with it
    # (their probes verify against the new CA file).
    dovecot_pid = stack.components["dovecot"].running().pid
    shutil.rmtree(isolated_env.state_dir / "tls")
    stack.up()
    assert stack.components["dovecot"].running().pid != dovecot_pid
    assert {s.state for s in stack.status()} == {"running"}
    pids = {name: c.running().pid for name, c in stack.components.items()}

    result = CliRunner().invoke(app, ["stack", "down"])
    assert result.exit_code == 0, result.output
    for pid in pids.values():
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(")")[-1][:3]
    state = str(isolated_env.state_dir)
    for pid in all_pids():
        assert not any(state in arg for arg in process_cmdline(pid)), process_cmdline(pid)
        assert not any(c.owns_process(pid) for c in stack.components.values())
    for port in isolated_env.ports().values():
        assert port_problem("test", "test_port", port) is None
    status = CliRunner().invoke(app, ["stack", "status"])
    assert status.exit_code == 3
    assert status.output.count("stopped") == len(COMPONENT_NAMES)


def test_logs_command_shows_tails(local_stack: Stack):
    result = CliRunner().invoke(app, ["stack", "logs", "dovecot", "-n", "3"])
    assert result.exit_code == 0
    assert len(result.output.strip().splitlines()) == 3
    everything = CliRunner().invoke(app, ["stack", "logs", "-n", "1"])
    assert all(f"==> {name} <==" in everything.output for name in COMPONENT_NAMES)
    bad = CliRunner().invoke(app, ["stack", "logs", "nosuch"])
    assert bad.exit_code == 1 and "no component 'nosuch'" in bad.output
