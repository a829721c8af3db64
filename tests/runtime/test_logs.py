import json
import logging

import pytest
import structlog
from pydantic import SecretStr

from mailintake.runtime.logs import REDACTED, RepeatedLibraryRecords, configure_logging

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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records_let_through(records_filter: logging.Filter, records: list[logging.LogRecord]) -> list[str]:
    return [record.getMessage() for record in records if records_filter.filter(record)]


def library_record(name: str, template: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, template, args, None)


def test_a_library_record_repeated_in_a_storm_is_let_through_once_per_window_with_a_count():
    clock = Clock()
    storm = RepeatedLibraryRecords(window_seconds=10.0, clock=clock)
    unable = [library_record("aiokafka", "Unable to update metadata from %s", [1]) for _ in range(1000)]
    assert records_let_through(storm, unable) == ["Unable to update metadata from [1]"]
    clock.now += 10.0
    assert records_let_through(storm, unable[:3]) == ["Unable to update metadata from [1] [999 more like it in the 10 s before]"]


def test_other_templates_loggers_and_our_own_records_are_not_held_back():
    storm = RepeatedLibraryRecords(window_seconds=10.0, clock=Clock())
    records = [
        library_record("aiokafka", "Unable to update metadata from %s", [1]),
        library_record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused"),
        library_record("aiokafka.consumer.fetcher", "Unable to update metadata from %s", [1]),
        *[library_record("mailintake.runtime.stream_processor", "processor.stopped") for _ in range(3)],
        *[library_record("services.ticketer.service", "Unable to update metadata from %s", [1]) for _ in range(2)],
    ]
    assert len(records_let_through(storm, records)) == len(records)


def test_a_service_logs_a_library_storm_as_one_line(capsys):
    configure_logging("test")
    for _ in range(500):
        logging.getLogger("aiokafka").error("Unable connect to node with id %s: %s", 1, "[Errno 111] Connect call failed")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines[:3]
    assert json.loads(lines[0])["event"] == "Unable connect to node with id 1: [Errno 111] Connect call failed"


def test_kinds_are_forgotten_past_the_bound_so_formatted_messages_cannot_grow_it():
    clock = Clock()
    storm = RepeatedLibraryRecords(window_seconds=10.0, clock=clock)
    bound = RepeatedLibraryRecords.MAX_KINDS
    for n in range(5 * bound):  # every message its own text, as a library that formats before logging
        clock.now += 0.01
        assert storm.filter(library_record("faust", f"offset {n} committed"))
    assert len(storm._let_through_at) <= bound
    # A kind seen within the window is still held back after the forgetting.
    repeated = library_record("faust", f"offset {5 * bound - 1} committed")
    assert records_let_through(storm, [repeated]) == []
