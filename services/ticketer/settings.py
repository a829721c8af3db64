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
