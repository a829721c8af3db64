"""Settings of the ticketer service."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from mailintake.runtime.settings import ServiceSettings


class UnknownReferencePolicy(StrEnum):
    REJECT = "reject"
    NEW_TICKET = "new_ticket"


class TicketerSettings(ServiceSettings):
    """The ticketer turns ``mail.classified`` decisions into tickets and emits ``ticket.events``."""

    model_config = SettingsConfigDict(env_prefix="MAILINTAKE_TICKETER_", frozen=True, use_attribute_docstrings=True)

    group_id: str = "mailintake-ticketer"
    """Kafka consumer group of the ticketer replicas."""

    instance_id: str = Field(default="mi", pattern=r"^[a-z0-9]{1,16}$")
    """Id of this help-desk installation, written into every ticket reference (must match the classifier's)."""

    unknown_reference: UnknownReferencePolicy = UnknownReferencePolicy.NEW_TICKET
    """What a follow-up to a ticket that does not exist does: 'reject' it, or open a 'new_ticket'."""

    max_dlq_ratio: float = Field(default=0.5, gt=0, le=1)
    """Stop the service when more than this share of recent records went to the DLQ."""

    max_batch: int = Field(default=500, ge=1, le=5000)
    """Mails applied to PostgreSQL in one transaction (each still guarded by the ledger); also the most taken from Kafka at once."""

    session_timeout_seconds: float = Field(default=10.0, ge=6, le=300)
    """Kafka consumer session timeout: how long the partitions of a replica that died without leaving the group wait before moving."""

    table_replication_factor: int = Field(default=1, ge=1)
    """Replication factor of the topics faust creates (the bundle table's changelog); set 3 on a production cluster."""

    auto_answers_enabled: bool = False
    """Send an auto-answer for each new ticket whose account names an auto-answer template. Off by default: it mails customers."""

    auto_answer_max_per_recipient: int = Field(default=3, ge=1)
    """At most this many auto-answers go to one address within the window; the brake on autoresponder ping-pong."""

    auto_answer_window_seconds: int = Field(default=3600, ge=1)
    """Length of the per-recipient window of auto_answer_max_per_recipient, in seconds."""
