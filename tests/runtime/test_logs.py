import json
import logging

import pytest
import structlog
from pydantic import SecretStr

from mailintake.runtime.logs import REDACTED, configure_logging


@pytest.fixture(autouse=True)
def restore_logging():
    """configure_logging binds structlog and the root handler to this test's captured
    stderr, which pytest closes afterwards; later tests that log in-process would fail
    with "I/O operation on closed file" unless the defaults come back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_secrets_never_reach_the_log(capsys):
    configure_logging("test")
    log = structlog.get_logger()
    log.info("login", account_id="desk", password="hunter2", token="abc", secret_value=SecretStr("x"), note=SecretStr("y"))
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["account_id"] == "desk" and line["service"] == "test"
    assert line["password"] == line["token"] == line["secret_value"] == line["note"] == REDACTED
    structlog.contextvars.clear_contextvars()


def test_third_party_records_are_json_too(capsys):
    import logging

    configure_logging("test")
    logging.getLogger("kafka.client").warning("No partition metadata for topic %s", "mail.raw")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "No partition metadata for topic mail.raw"
    assert line["logger"] == "kafka.client" and line["level"] == "warning" and line["service"] == "test"
    structlog.contextvars.clear_contextvars()
