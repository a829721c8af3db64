"""Shared by the classifier tests: a ``mail.raw`` record around raw bytes, and the classifier."""

from __future__ import annotations

import datetime as dt

import pytest

from mailintake.contracts.records import MailRaw, SenderIdentity, TicketOptions
from services.classifier.core import Classifier
from services.classifier.settings import ClassifierSettings


def raw_record(raw: bytes, options: dict | None = None, size: int | None = None) -> MailRaw:
    """A mail.raw record as the fetcher writes it for an inline mail."""
    return MailRaw(
        account_id="support",
        account_name="IT Support",
        protocol="IMAP",
        source_id="imap:1711380000:4711",
        poll_cycle=7,
        poll_interval_seconds=60,
        fetched_at=dt.datetime(2024, 12, 2, 9, 0, tzinfo=dt.UTC),
        size=len(raw) if size is None else size,
        raw=raw,
        sender_identity=SenderIdentity(name="IT Support", address="support@helpdesk.example.org"),
        ticket_options=TicketOptions(**(options or {})),
    )


@pytest.fixture
def make_raw_record():
    return raw_record


@pytest.fixture
def classifier() -> Classifier:
    return Classifier.from_settings(ClassifierSettings())
