"""Topic contracts as Kafka topics: planning changes, `topics list`, and `topics apply` on a broker."""

from __future__ import annotations

import os
import shutil
import socket
import uuid

import pytest
import yaml
from typer.testing import CliRunner

from mailintake.contracts.cli import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP, topics_app
from mailintake.contracts.topic_admin import ChangeKind, TopicState, plan_topic
from mailintake.contracts.topics import SCHEMAS_DIR_ENV, load_topics

TOPICS = load_topics()
RAW = TOPICS["mail.raw"]


def _state(partitions: int, **config: str) -> TopicState:
    return TopicState(partitions, {**RAW.kafka_config(), **config})


def test_a_missing_topic_is_created_with_partitions_and_config():
    (change,) = plan_topic(RAW, None)
    assert change.kind is ChangeKind.CREATE
    assert change.partitions == 12
    assert change.config == {"cleanup.policy": "delete", "retention.ms": "604800000", "max.message.bytes": "2097152"}


def test_a_matching_topic_is_unchanged():
    assert [c.kind for c in plan_topic(RAW, _state(12))] == [ChangeKind.UNCHANGED]


def test_partitions_grow_and_config_is_set():
    changes = plan_topic(RAW, _state(6, **{"retention.ms": "86400000"}))
    assert [c.kind for c in changes] == [ChangeKind.ADD_PARTITIONS, ChangeKind.SET_CONFIG]
    assert changes[0].partitions == 12
    assert changes[1].config == {"retention.ms": "604800000"}
    assert "86400000 -> 604800000" in changes[1].detail


def test_partitions_never_shrink():
    (change,) = plan_topic(RAW, _state(24))
    assert change.kind is ChangeKind.CANNOT_SHRINK


def test_schemas_folder_can_be_moved_by_environment(tmp_path, monkeypatch):
    shutil.copytree(RAW.folder, tmp_path / "schemas")
    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(tmp_path / "schemas"))
    assert load_topics()["mail.raw"].folder == (tmp_path / "schemas").resolve()


def test_topics_list_shows_every_contract():
    result = CliRunner().invoke(topics_app, ["list"])
    assert result.exit_code == 0, result.output
    for topic in TOPICS.values():
        assert f"{topic.name}: {topic.partitions} partitions" in result.output


def _broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


@pytest.mark.stack
def test_topics_apply_creates_grows_and_reconfigures_idempotently(tmp_path, monkeypatch):
    bootstrap = os.environ.get(BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP)
    if not _broker_answers(bootstrap):
        pytest.skip(f"no Kafka broker answers at {bootstrap} within 2 s")
    # A throwaway topic in a throwaway schemas folder: the pipeline's own topics stay untouched.
    name = f"contracts-test-{uuid.uuid4().hex[:10]}"
    folder = tmp_path / "schemas"
    folder.mkdir()
    shutil.copy(RAW.schema_path, folder / RAW.schema_file)
    contract = yaml.safe_load(RAW.yaml_path.read_text()) | {"topic": name, "partitions": 1, "retention_ms": 3600000}

    def write(**changes: object) -> None:
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(contract | changes))

    monkeypatch.setenv(SCHEMAS_DIR_ENV, str(folder))
    runner = CliRunner()

    def apply() -> str:
        result = runner.invoke(topics_app, ["apply", "--bootstrap", bootstrap, "--timeout", "20"])
        assert result.exit_code == 0, result.output
        return result.output

    from kafka import KafkaAdminClient

    try:
        write()
        assert f"created {name} (1 partitions" in apply()
        assert f"unchanged: {name}" in apply()
        write(partitions=3, retention_ms=7200000)
        output = apply()
        assert f"added partitions to {name} (1 -> 3)" in output
        assert f"changed config of {name} (retention.ms: 3600000 -> 7200000)" in output
        assert f"unchanged: {name}" in apply()
    finally:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            if name in admin.list_topics():
                admin.delete_topics([name])
        finally:
            admin.close()
