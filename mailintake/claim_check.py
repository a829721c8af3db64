"""Claim-check store for mails too large to travel inline on Kafka.

The fetcher puts the bytes into PostgreSQL, keyed by their SHA-256, *before* it
produces the record that refers to them, so a consumer on another machine always finds
them. Content addressing makes a re-put after a crash a no-op.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import BigInteger, Engine, LargeBinary, String, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, mapped_column

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import ClaimCheck
from mailintake.database import Base

STORE_NAME = "postgres"


class StoredMail(Base):
    __tablename__ = "claim_checks"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ClaimCheckMissing(InvalidMessage):
    """The record refers to bytes the store does not have."""

    def __init__(self, sha256: str) -> None:
        super().__init__(f"claim-check {sha256} not found in store {STORE_NAME!r}")
        self.claim_check_sha256 = sha256


class ClaimCheckStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, raw: bytes) -> ClaimCheck:
        digest = hashlib.sha256(raw).hexdigest()
        with self._engine.begin() as connection:
            connection.execute(
                insert(StoredMail).values(sha256=digest, size=len(raw), content=raw).on_conflict_do_nothing()
            )
        return ClaimCheck(store=STORE_NAME, sha256=digest, size=len(raw))

    def get(self, check: ClaimCheck) -> bytes:
        with self._engine.connect() as connection:
            content = connection.scalar(select(StoredMail.content).where(StoredMail.sha256 == check.sha256))
        if content is None:
            raise ClaimCheckMissing(check.sha256)
        return bytes(content)
