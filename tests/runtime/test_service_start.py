"""A bad setting stops a service at start, naming the variable and the reason."""

import os
import subprocess
import sys


def run(*args, **env):
    return subprocess.run(
        [sys.executable, "-m", "mailintake", *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=60
    )


def test_bad_setting_stops_the_service_with_the_variable_named():
    result = run("run", "classifier", MAILINTAKE_CLASSIFIER_MAX_DLQ_RATIO="2")
    assert result.returncode == 2
    assert "MAILINTAKE_CLASSIFIER_MAX_DLQ_RATIO (ClassifierSettings.max_dlq_ratio)" in result.stderr
    assert "less than or equal to 1" in result.stderr


def test_bad_accounts_file_stops_the_fetcher_with_file_and_field(tmp_path):
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text("accounts:\n  - id: desk\n    name: Desk\n    host: h\n    port: 0\n    username: u\n    password: p\n")
    result = run("run", "fetcher", "--accounts", str(accounts))
    assert result.returncode == 2
    assert f"{accounts}: account desk: port: Input should be greater than or equal to 1" in result.stderr
