"""The Kafka probe's quiet logging: refused connections while the broker starts are no error lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from mailintake.runtime.logs import configure_logging
from mailintake.stack.kafka import _quiet_kafka_client

pytestmark = pytest.mark.usefixtures("restored_logging")


def refused(logger_name: str = "kafka.net.manager") -> None:
    # What kafka-python 3 logs for each refused bootstrap connection.
    logging.getLogger(logger_name).error("Connection failed: KafkaConnectionError: 111 ECONNREFUSED")


def test_refused_connections_during_the_probe_print_nothing_under_the_clis_logging():
    out = io.StringIO()
    configure_logging("cli", "WARNING", cache=False, stream=out)
    with _quiet_kafka_client():
        refused()
        refused("kafka.net.connection")
    assert out.getvalue() == ""
    assert logging.getLogger("kafka").level == logging.WARNING, "set back after the probe"
    refused()
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["logger"] == "kafka.net.manager", "outside the probe, kafka-python's errors show"


@pytest.mark.parametrize(
    ("level", "printed"),
    [(logging.DEBUG, True), (logging.NOTSET, False)],
    ids=["set to DEBUG to watch the probe", "set by nobody"],
)
def test_the_probe_leaves_a_watched_logger_alone_and_unsets_one_nobody_set(level, printed):
    out = io.StringIO()
    configure_logging("cli", "WARNING", cache=False, stream=out)
    logging.getLogger("kafka").setLevel(level)
    with _quiet_kafka_client():
        refused()
    assert ("ECONNREFUSED" in out.getvalue()) is printed
    assert logging.getLogger("kafka").level == level
