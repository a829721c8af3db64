"""schemas/registry.yaml: every schema registered, every version compatible with its predecessor."""

from __future__ import annotations

import itertools
import json

import avro.schema
import pytest

from mailintake.contracts import CompatibilityMode, check_compatibility
from mailintake.contracts.errors import ContractError, UnknownSchemaId, UnregisteredSchema
from mailintake.contracts.registry import FileRegistry, load_file_registry
from mailintake.contracts.topics import load_topics

TOPICS = load_topics()
REGISTRY = load_file_registry()


def test_every_topic_has_a_subject_and_every_subject_a_topic():
    assert set(REGISTRY.subjects()) == {t.subject for t in TOPICS.values()}


@pytest.mark.parametrize("topic", TOPICS.values(), ids=lambda t: t.name)
def test_current_schema_is_the_latest_registered_version(topic):
    latest = REGISTRY.versions(topic.subject)[-1]
    current = json.loads(topic.schema_path.read_text(encoding="utf-8"))
    assert current == json.loads(latest.text), (
        f"{topic.schema_file} differs from {topic.subject} v{latest.version}: register the change as a new version"
    )
    assert REGISTRY.id_for(topic.subject, avro.schema.parse(latest.text)) == latest.id


@pytest.mark.parametrize("topic", TOPICS.values(), ids=lambda t: t.name)
def test_every_version_is_compatible_with_its_predecessor(topic):
    versions = REGISTRY.versions(topic.subject)
    for previous, current in itertools.pairwise(versions):
        problems = check_compatibility(previous.schema, current.schema, topic.compatibility)
        assert not problems, f"{topic.subject} v{current.version} breaks {topic.compatibility}: {problems}"


def test_full_compatibility_is_justified():
    for topic in TOPICS.values():
        if topic.compatibility is CompatibilityMode.FULL:
            assert topic.compatibility_reason


def _mail_raw_with(change) -> avro.schema.Schema:
    definition = json.loads(TOPICS["mail.raw"].schema_path.read_text(encoding="utf-8"))
    change(definition["fields"])
    return avro.schema.parse(json.dumps(definition))


MAIL_RAW = avro.schema.parse(TOPICS["mail.raw"].schema_path.read_text(encoding="utf-8"))
ADDED_WITHOUT_DEFAULT = _mail_raw_with(lambda fields: fields.append({"name": "folder", "type": "string"}))
ADDED_WITH_DEFAULT = _mail_raw_with(
    lambda fields: fields.append({"name": "folder", "type": ["null", "string"], "default": None})
)
REMOVED_REQUIRED = _mail_raw_with(lambda fields: fields.remove(next(f for f in fields if f["name"] == "size")))


def test_adding_a_field_without_default_breaks_backward():
    problems = check_compatibility(MAIL_RAW, ADDED_WITHOUT_DEFAULT, CompatibilityMode.BACKWARD)
    assert problems and any("folder" in p for p in problems)


def test_adding_a_field_with_default_is_full_compatible():
    assert check_compatibility(MAIL_RAW, ADDED_WITH_DEFAULT, CompatibilityMode.FULL) == []


def test_removing_a_required_field_breaks_forward_but_not_backward():
    assert check_compatibility(MAIL_RAW, REMOVED_REQUIRED, CompatibilityMode.BACKWARD) == []
    problems = check_compatibility(MAIL_RAW, REMOVED_REQUIRED, CompatibilityMode.FORWARD)
    assert problems and any("size" in p for p in problems)
    assert check_compatibility(MAIL_RAW, REMOVED_REQUIRED, CompatibilityMode.FULL) == problems


def test_removing_an_enum_symbol_breaks_backward():
    definition = json.loads(TOPICS["ticket.events"].schema_path.read_text(encoding="utf-8"))
    kind = next(f for f in definition["fields"] if f["name"] == "kind")
    kind["type"]["symbols"].remove("MAIL_REJECTED")
    previous = avro.schema.parse(TOPICS["ticket.events"].schema_path.read_text(encoding="utf-8"))
    assert check_compatibility(previous, avro.schema.parse(json.dumps(definition)), CompatibilityMode.BACKWARD)


def test_an_unregistered_schema_has_no_id():
    with pytest.raises(UnregisteredSchema, match="mail.raw-value"):
        REGISTRY.id_for("mail.raw-value", ADDED_WITH_DEFAULT)


def test_an_unknown_id_is_refused():
    with pytest.raises(UnknownSchemaId, match="999"):
        REGISTRY.schema_by_id(999)


def test_a_registry_file_reusing_an_id_is_refused(tmp_path):
    (tmp_path / "a.avsc").write_text(TOPICS["mail.raw"].schema_path.read_text())
    (tmp_path / "registry.yaml").write_text(
        "subjects:\n"
        "  a-value: [{version: 1, id: 7, schema: a.avsc}]\n"
        "  b-value: [{version: 1, id: 7, schema: a.avsc}]\n"
    )
    with pytest.raises(ContractError, match="id 7 is used by both"):
        FileRegistry(tmp_path / "registry.yaml")


def test_registry_versions_must_count_up(tmp_path):
    (tmp_path / "a.avsc").write_text(TOPICS["mail.raw"].schema_path.read_text())
    (tmp_path / "registry.yaml").write_text("subjects:\n  a-value: [{version: 2, id: 7, schema: a.avsc}]\n")
    with pytest.raises(ContractError, match="1, 2, 3"):
        FileRegistry(tmp_path / "registry.yaml")
