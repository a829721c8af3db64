"""Bringing a Kafka cluster's topics in line with the contracts.

Planning is a pure function of the contract and what the broker reports, so it
is tested without a broker; only ``read_states`` and ``apply_changes`` talk to
Kafka. Only the settings the contracts declare are managed: partitions (which
Kafka can add but never remove) and the declared topic configs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from kafka.admin import ConfigResource, ConfigResourceType

from mailintake.contracts.errors import ContractError
from mailintake.contracts.topics import Topic


class TopicChangeFailed(ContractError):
    """The broker accepted a request but refused a change in it."""


class ChangeKind(StrEnum):
    CREATE = "create"
    ADD_PARTITIONS = "add partitions"
    SET_CONFIG = "set config"
    UNCHANGED = "unchanged"
    CANNOT_SHRINK = "cannot shrink"


@dataclass(frozen=True)
class TopicState:
    """What the broker reports for an existing topic."""

    partitions: int
    config: Mapping[str, str | None]


@dataclass(frozen=True)
class Change:
    topic: str
    kind: ChangeKind
    detail: str = ""
    partitions: int | None = None
    config: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.topic}: {self.kind}" + (f" ({self.detail})" if self.detail else "")


def plan_topic(topic: Topic, state: TopicState | None) -> list[Change]:
    """The changes that make the broker's ``state`` of ``topic`` match its contract."""
    wanted = topic.kafka_config()
    if state is None:
        settings = ", ".join(f"{k}={v}" for k, v in wanted.items())
        detail = f"{topic.partitions} partitions, {settings}"
        return [Change(topic.name, ChangeKind.CREATE, detail, topic.partitions, wanted)]
    changes = []
    if state.partitions < topic.partitions:
        detail = f"{state.partitions} -> {topic.partitions}"
        changes.append(Change(topic.name, ChangeKind.ADD_PARTITIONS, detail, topic.partitions))
    elif state.partitions > topic.partitions:
        detail = (
            f"has {state.partitions} partitions, the contract says {topic.partitions}; "
            "Kafka cannot remove partitions, so recreate the topic or raise the contract"
        )
        changes.append(Change(topic.name, ChangeKind.CANNOT_SHRINK, detail))
    differing = {k: v for k, v in wanted.items() if state.config.get(k) != v}
    if differing:
        detail = ", ".join(f"{k}: {state.config.get(k)} -> {v}" for k, v in differing.items())
        changes.append(Change(topic.name, ChangeKind.SET_CONFIG, detail, config=differing))
    return changes or [Change(topic.name, ChangeKind.UNCHANGED)]


def read_states(admin: Any, topics: Iterable[Topic]) -> dict[str, TopicState]:
    """The state of those ``topics`` that exist, asked of a ``KafkaAdminClient``."""
    names = sorted(set(admin.list_topics()) & {t.name for t in topics})
    if not names:
        return {}
    partitions = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    described = admin.describe_configs(resources, config_filter="all")["topic"]
    return {
        name: TopicState(partitions[name], {k: entry.get("value") for k, entry in described[name].items()})
        for name in names
    }


def apply_changes(admin: Any, changes: Iterable[Change], replication_factor: int) -> None:
    """Carry out planned ``changes`` with a ``KafkaAdminClient``.

    Kafka's errors are raised as they come (``KafkaError``, or ``ValueError`` for a
    config key the broker cannot change), refused config changes as ``TopicChangeFailed``.
    """
    changes = list(changes)
    creates = {
        c.topic: {"num_partitions": c.partitions, "replication_factor": replication_factor, "configs": dict(c.config)}
        for c in changes
        if c.kind is ChangeKind.CREATE
    }
    if creates:
        admin.create_topics(creates, wait_for_metadata=True)
    grown = {c.topic: c.partitions for c in changes if c.kind is ChangeKind.ADD_PARTITIONS}
    if grown:
        admin.create_partitions(grown)
    altered = [
        ConfigResource(ConfigResourceType.TOPIC, c.topic, configs=dict(c.config))
        for c in changes
        if c.kind is ChangeKind.SET_CONFIG
    ]
    if altered:
        results = admin.alter_configs(altered).get("topic", {})
        failed = {name: result for name, result in results.items() if result != "OK"}
        if failed:
            raise TopicChangeFailed(f"altering topic configs failed: {failed}")


def sync_topics(admin: Any, topics: Iterable[Topic], replication_factor: int, dry_run: bool = False) -> list[Change]:
    """Plan and (unless ``dry_run``) apply the changes for ``topics``; returns the plan."""
    topics = list(topics)
    states = read_states(admin, topics)
    changes = [change for topic in topics for change in plan_topic(topic, states.get(topic.name))]
    if not dry_run:
        apply_changes(admin, changes, replication_factor)
    return changes
