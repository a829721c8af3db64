"""The local broker's JVM options, as this machine's Java reads them."""

from __future__ import annotations

import re
import subprocess

import pytest

from mailintake.stack.kafka import Kafka
from mailintake.stack.layout import StackLayout
from mailintake.stack.preflight import MissingTool, find_java
from mailintake.stack.settings import StackSettings


def jvm_options(tmp_path) -> tuple[str, list[str]]:
    """The java binary and the options before the classpath of the broker's command."""
    settings = StackSettings(state_dir=tmp_path)
    kafka = Kafka(settings, StackLayout.of(settings))
    java = find_java()
    if isinstance(java, MissingTool):
        pytest.fail(java.message)
    kafka.java = java
    command = kafka.command()
    return command[0], command[1:command.index("-cp")]


def test_the_java_on_this_machine_accepts_every_option_and_runs_the_broker_on_the_client_jit_only(tmp_path):
    java, options = jvm_options(tmp_path)

    # The JVM refuses an option it does not know, so a misspelt one fails here, not at `stack up`.
    result = subprocess.run([java, *options, "-XX:+PrintFlagsFinal", "-version"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    flags = dict(re.findall(r"^\s*\S+\s+(\w+)\s+=\s+(\S+)", result.stdout, re.M))
    assert flags["TieredStopAtLevel"] == "1"
    assert flags["ExitOnOutOfMemoryError"] == "true"
