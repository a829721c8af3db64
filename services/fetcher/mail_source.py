"""What the poll loop needs from a mailbox, whatever the protocol (IMAP, POP3, EWS, Graph).

The loop in ``service.py`` drives every source through the same no-loss order, one
chunk at a time::

    ids = source.pending()                 # stable source ids, oldest first
    sizes = source.sizes()                 # their octets, if the listing told them (chunking)
    mails = source.fetch(chunk)            # bytes; nothing changes on the server
    ...produce to Kafka, wait for every ack...
    source.after_fetch(acknowledged)       # flag / move / delete
    source.advance(chunk)                  # durable mark: never fetch these again
    source.close()

A source id is stable for the life of the mail at its source and is, with the account
id, the deduplication key downstream: ``imap:UIDVALIDITY:UID``, ``pop3:UIDL``,
``ews:ItemId``, ``graph:<message id>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from services.fetcher.account import Account


class StepFailed(Exception):
    """A step of a poll or a connection check failed.

    ``step`` names it (connect, tls, capabilities, authentication, select, fetch,
    after_fetch, produce, ...). ``server_reply`` is the mail server's text exactly as
    it sent it, or None when the server said nothing (network, TLS, or we refused
    before sending). ``explanation`` is our own sentence, or None when the server's
    reply says it all.
    """

    def __init__(self, step: str, server_reply: str | None = None, explanation: str | None = None) -> None:
        self.step = step
        self.server_reply = server_reply
        self.explanation = explanation
        super().__init__(f"{step} failed: {self.message}")

    @property
    def message(self) -> str:
        """The server's exact reply alone when that is all there is, else our explanation with it."""
        if self.explanation and self.server_reply:
            return f"{self.explanation} Server: {self.server_reply}"
        return self.server_reply or self.explanation or "failed"


class MailServerError(StepFailed):
    """Talking to the mail server failed, or we refused to send something to it."""


class MailSource(Protocol):
    """One open, authenticated session on one mailbox of one account."""

    account: Account

    def pending(self) -> list[str]:
        """Source ids of the mails not yet produced, oldest first."""
        ...

    def sizes(self) -> Mapping[str, int]:
        """Octets of the pending mails, where the server told them with the listing; else empty."""
        ...

    def fetch(self, source_ids: Sequence[str]) -> Mapping[str, bytes]:
        """Raw bytes by source id, leaving the mails untouched on the server.

        A mail that vanished since :meth:`pending` is absent from the result.
        """
        ...

    def after_fetch(self, source_ids: Sequence[str]) -> None:
        """Apply the account's after-fetch action to mails Kafka has acknowledged."""
        ...

    def advance(self, source_ids: Sequence[str]) -> None:
        """Record durably that these mails were produced and acted on."""
        ...

    def close(self) -> None:
        """End the session; never raises (the connection may already be gone)."""
        ...
