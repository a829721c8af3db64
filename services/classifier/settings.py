"""Settings of the classifier service."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from mailintake.runtime.settings import ServiceSettings

# What one mail.classified record may spend on bodies: the topic takes 2 MiB per record,
# and headers, attachment metadata and options need room beside the bodies.
MAX_BODIES_BYTES = 1536 * 1024


class LoopBulkDecision(StrEnum):
    NEW_TICKET = "new_ticket"
    REJECT = "reject"


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

    outbound_message_id_domains: str = ""
    """Comma-separated domains our own Message-IDs use; a reply names a ticket through In-Reply-To/References only with an id on one of them. Empty: any domain (the id's format and instance id still must match)."""

    loop_bulk_decision: LoopBulkDecision = LoopBulkDecision.NEW_TICKET
    """What a mail marked as automatic, bulk, loop or bounce becomes when it is no follow-up: a 'new_ticket' (without auto-answer) or 'reject'."""

    max_mail_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Mails larger than this are not parsed but dead-lettered; memory per replica grows with it (about 4 times this at peak)."""

    max_body_text_bytes: int = Field(default=256 * 1024, ge=1024)
    """Longest plain-text body (UTF-8 bytes) put on mail.classified; longer ones are cut and marked truncated."""

    max_body_html_bytes: int = Field(default=512 * 1024, ge=1024)
    """Longest sanitised HTML body (UTF-8 bytes) put on mail.classified; longer ones are cut and marked truncated."""

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

    @model_validator(mode="after")
    def _bodies_fit_the_topic(self) -> ClassifierSettings:
        if self.max_body_text_bytes + self.max_body_html_bytes > MAX_BODIES_BYTES:
            raise ValueError(
                f"max_body_text_bytes + max_body_html_bytes must stay within {MAX_BODIES_BYTES} bytes "
                "so a decision fits mail.classified's 2 MiB record limit"
            )
        return self

    @property
    def message_id_domains(self) -> frozenset[str]:
        """``outbound_message_id_domains`` as a set of lower-case domains."""
        return frozenset(d.strip().lower() for d in self.outbound_message_id_domains.split(",") if d.strip())
