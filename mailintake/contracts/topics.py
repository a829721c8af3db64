"""The topic contracts: one yaml file beside each ``.avsc`` in the schemas folder."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator

from mailintake.contracts.compatibility import CompatibilityMode
from mailintake.contracts.errors import ContractError

SCHEMAS_DIR_ENV = "MAILINTAKE_SCHEMAS_DIR"
REGISTRY_FILE_NAME = "registry.yaml"


def schemas_dir() -> Path:
    """The schemas folder: ``$MAILINTAKE_SCHEMAS_DIR`` if set, else ``<repo root>/schemas``."""
    configured = os.environ.get(SCHEMAS_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "schemas"


@functools.lru_cache(maxsize=16)
def _resolved(configured: str | None) -> Path:
    return schemas_dir().resolve()


def resolved_schemas_dir() -> Path:
    """``schemas_dir()`` resolved, remembered per value of ``$MAILINTAKE_SCHEMAS_DIR``.

    Every record encoded or decoded looks its codec up by this folder; resolving the
    path each time cost more than the Avro encoding of a small record.
    """
    return _resolved(os.environ.get(SCHEMAS_DIR_ENV))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Services(_Frozen):
    """Which services write to a topic and which read it."""

    producers: tuple[str, ...] = Field(min_length=1)
    consumers: tuple[str, ...] = Field(min_length=1)


class KeySpec(_Frozen):
    """What a topic's record key is; keys are UTF-8 strings."""

    description: str
    format: str = Field(description="Shape of the key, with <field> placeholders, e.g. <account_id>.")


class Example(_Frozen):
    """One example message in yaml form (see ``mailintake.contracts.examples``)."""

    name: str
    key: str
    value: dict[str, Any]


class Topic(_Frozen):
    """One Kafka topic: its schema, who uses it, how it is keyed and configured."""

    name: str = Field(alias="topic")
    description: str
    schema_file: str = Field(alias="schema", description="The .avsc file, relative to the schemas folder.")
    services: Services
    key: KeySpec
    partitions: PositiveInt
    cleanup_policy: Literal["delete", "compact", "compact,delete"]
    retention_ms: int = Field(ge=-1, description="-1 keeps records forever.")
    config: dict[str, str] = Field(default_factory=dict, description="Further topic-level Kafka configs.")
    compatibility: CompatibilityMode
    compatibility_reason: str | None = None
    examples: tuple[Example, ...] = Field(min_length=1)
    folder: Path = Field(exclude=True, description="The schemas folder the topic was loaded from.")

    @field_validator("config", mode="before")
    @classmethod
    def _config_as_kafka_strings(cls, value: Any) -> Any:
        # yaml reads 2097152 as an int and true as a bool; Kafka wants "2097152" and "true".
        if not isinstance(value, dict):
            return value
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}

    @model_validator(mode="after")
    def _config_not_shadowed(self) -> Topic:
        # Two places for one setting would let them disagree silently.
        for reserved in ("cleanup.policy", "retention.ms"):
            if reserved in self.config:
                raise ValueError(f"set {reserved} with its own key, not under config")
        return self

    @property
    def producers(self) -> tuple[str, ...]:
        return self.services.producers

    @property
    def consumers(self) -> tuple[str, ...]:
        return self.services.consumers

    @property
    def subject(self) -> str:
        """The schema-registry subject of the topic's values (TopicNameStrategy)."""
        return f"{self.name}-value"

    @property
    def schema_path(self) -> Path:
        return self.folder / self.schema_file

    @property
    def yaml_path(self) -> Path:
        return self.folder / f"{self.name}.yaml"

    def kafka_config(self) -> dict[str, str]:
        """The topic-level configs to set on the broker, as strings."""
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            **self.config,
        }


def load_topic(path: Path) -> Topic:
    """Load one topic yaml file; the file must be named ``<topic>.yaml``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ContractError(f"{path.name}: not valid yaml: {error}") from error
    if not isinstance(data, dict):
        raise ContractError(f"{path.name}: expected a mapping at the top level")
    try:
        topic = Topic.model_validate({**data, "folder": path.parent})
    except ValidationError as error:
        raise ContractError(f"{path.name}: {error}") from error
    if path.name != f"{topic.name}.yaml":
        raise ContractError(f"{path.name}: describes topic {topic.name}, so it must be named {topic.name}.yaml")
    return topic


def load_topics(folder: Path | None = None) -> dict[str, Topic]:
    """All topics of the schemas folder (default: ``schemas_dir()``), by name, read anew each call."""
    folder = (folder or schemas_dir()).resolve()
    paths = sorted(p for p in folder.glob("*.yaml") if p.name != REGISTRY_FILE_NAME)
    if not paths:
        raise ContractError(f"no topic yaml files in {folder}")
    topics = [load_topic(p) for p in paths]
    return {t.name: t for t in topics}


def get_topic(name: str, folder: Path | None = None) -> Topic:
    """The topic called ``name``; ``KeyError`` naming the known topics if there is none."""
    topics = load_topics(folder)
    try:
        return topics[name]
    except KeyError:
        raise KeyError(f"no topic {name!r}; known topics: {', '.join(topics)}") from None
