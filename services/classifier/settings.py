"""Settings of the classifier service."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from mailintake.runtime.settings import ServiceSettings


class ClassifierSettings(ServiceSettings):
    """The classifier reads ``mail.raw`` and writes decisions to ``mail.classified``."""

    model_config = SettingsConfigDict(env_prefix="MAILINTAKE_CLASSIFIER_", frozen=True, use_attribute_docstrings=True)

    group_id: str = "mailintake-classifier"
    """Kafka consumer group of the classifier replicas."""

    instance_id: str = Field(default="mi", pattern=r"^[a-z0-9]{1,16}$")
    """Id of this help-desk installation inside ticket references; references with another id are ignored."""

    reference_pattern: str = r"\[#(?P<instance>[a-z0-9]{1,16})-(?P<number>\d+)\]"
    """Regular expression that finds a ticket reference in a subject; needs the named groups 'instance' and 'number'."""

    max_dlq_ratio: float = Field(default=0.5, gt=0, le=1)
    """Stop the service when more than this share of recent records went to the DLQ."""

    @field_validator("reference_pattern")
    @classmethod
    def _pattern_has_groups(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        missing = {"instance", "number"} - set(compiled.groupindex)
        if missing:
            raise ValueError(f"needs the named groups {sorted(missing)}")
        return value
