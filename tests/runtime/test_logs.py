import json
import logging

import pytest
import structlog
from pydantic import SecretStr

from mailintake.runtime.logs import REDACTED, configure_logging

pytestmark = pytest.mark.usefixtures("restored_logging")


def test_secrets_never_reach_the_log(capsys):
    configure_logging("test")
    log = structlog.get_logger()
    for _ in range(2):  # the second time the keys' verdicts come from the cache
        log.info("login", account_id="desk", password="hunter2", token="abc", secret_value=SecretStr("x"), note=SecretStr("y"))
    lines = [json.loads(text) for text in capsys.readouterr().err.strip().splitlines()[-2:]]
    for line in lines:
        assert line["account_id"] == "desk" and line["service"] == "test"
        assert line["password"] == line["token"] == line["secret_value"] == line["note"] == REDACTED
    structlog.contextvars.clear_contextvars()


def test_third_party_records_are_json_too(capsys):
    configure_logging("test")
    logging.getLogger("kafka.client").warning("No partition metadata for topic %s", "mail.raw")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "No partition metadata for topic mail.raw"
    assert line["logger"] == "kafka.client" and line["level"] == "warning" and line["service"] == "test"
    structlog.contextvars.clear_contextvars()


def test_cli_logging_keeps_stdout_for_the_commands_output_and_lets_a_service_reconfigure():
    import subprocess
    import sys

    script = (
        "import structlog\n"
        "from mailintake.runtime.logs import configure_cli_logging, configure_logging\n"
        "log = structlog.get_logger('probe')\n"
        "configure_cli_logging()\n"
        "log.info('quiet at the cli'); log.warning('careful')\n"
        "print('the output')\n"
        "configure_logging('fetcher', 'INFO')\n"
        "log.info('service info')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout == "the output\n"
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["event"] for line in lines] == ["careful", "service info"]
