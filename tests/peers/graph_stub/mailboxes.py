"""The stub's in-memory Microsoft 365 tenant: mailboxes, mail folders, messages, the
per-folder change log that delta queries read, and who may open which mailbox.

Message and folder ids are opaque to clients, as Graph's are; a moved message gets a
new id, as in Exchange Online without immutable ids.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: Well-known folder names of the Graph mailFolder resource that every stub mailbox has,
#: with their display names and parents (msgfolderroot is the top of the store).
WELL_KNOWN = {
    "msgfolderroot": ("Top of Information Store", None),
    "inbox": ("Inbox", "msgfolderroot"),
    "archive": ("Archive", "msgfolderroot"),
    "deleteditems": ("Deleted Items", "msgfolderroot"),
    "sentitems": ("Sent Items", "msgfolderroot"),
    "drafts": ("Drafts", "msgfolderroot"),
    "junkemail": ("Junk Email", "msgfolderroot"),
}

_ids = itertools.count(1)


def opaque_id(kind: str, mailbox: str) -> str:
    raw = f"{kind}\0{mailbox}\0{next(_ids)}".encode()
    # Graph ids are URL-safe base64 that may end in '=' (a client must encode them in paths).
    return "AAMk" + base64.urlsafe_b64encode(raw).decode()


@dataclass
class StubMessage:
    id: str
    mime: bytes
    received: datetime
    folder_id: str
    is_read: bool = False


@dataclass
class StubMailFolder:
    id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None


@dataclass(frozen=True)
class Change:
    """One entry of a mailbox's change log: what happened to a message in a folder."""

    sequence: int
    folder_id: str
    message_id: str
    kind: str
    """created, updated or removed (from this folder: deleted, or moved out)."""


@dataclass
class StubMailbox:
    address: str
    display_name: str
    folders: dict[str, StubMailFolder] = field(default_factory=dict)
    messages: dict[str, StubMessage] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    recoverable_items: list[StubMessage] = field(default_factory=list)
    """Messages removed with DELETE (Exchange keeps them in Recoverable Items, not in a visible folder)."""
    _sequence: itertools.count = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for name, (display, parent) in WELL_KNOWN.items():
            parent_id = self.well_known(parent).id if parent else None
            folder = StubMailFolder(opaque_id("F", self.address), display, parent_id, name)
            self.folders[folder.id] = folder

    # --- folders ---------------------------------------------------------------------
    def well_known(self, name: str) -> StubMailFolder:
        return next(f for f in self.folders.values() if f.well_known == name)

    @property
    def inbox(self) -> StubMailFolder:
        return self.well_known("inbox")

    def folder(self, id_or_name: str) -> StubMailFolder | None:
        """By id, or by well-known name (case-insensitive), as Graph's /mailFolders/{id} accepts both."""
        return self.folders.get(id_or_name) or next(
            (f for f in self.folders.values() if f.well_known == id_or_name.lower()), None
        )

    def children(self, folder_id: str) -> list[StubMailFolder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def add_folder(self, display_name: str, parent: StubMailFolder | None = None) -> StubMailFolder:
        folder = StubMailFolder(opaque_id("F", self.address), display_name, (parent or self.well_known("msgfolderroot")).id)
        self.folders[folder.id] = folder
        return folder

    def in_folder(self, folder_id: str) -> list[StubMessage]:
        return [m for m in self.messages.values() if m.folder_id == folder_id]

    # --- messages --------------------------------------------------------------------
    def _log(self, folder_id: str, message_id: str, kind: str) -> None:
        self.changes.append(Change(next(self._sequence), folder_id, message_id, kind))

    @property
    def sequence(self) -> int:
        """The sequence number of the latest change (0 before any)."""
        return self.changes[-1].sequence if self.changes else 0

    def deliver(self, mime: bytes, folder: StubMailFolder | None = None, *, received: datetime | None = None,
                is_read: bool = False) -> str:
        target = folder or self.inbox
        message = StubMessage(opaque_id("M", self.address), mime, received or datetime.now(UTC), target.id, is_read)
        self.messages[message.id] = message
        self._log(target.id, message.id, "created")
        return message.id

    def mark_read(self, message: StubMessage, is_read: bool) -> None:
        message.is_read = is_read
        self._log(message.folder_id, message.id, "updated")

    def move(self, message: StubMessage, target: StubMailFolder) -> StubMessage:
        """A new message with a new id in ``target``; the old id is gone."""
        del self.messages[message.id]
        self._log(message.folder_id, message.id, "removed")
        moved = StubMessage(opaque_id("M", self.address), message.mime, message.received, target.id, message.is_read)
        self.messages[moved.id] = moved
        self._log(target.id, moved.id, "created")
        return moved

    def delete(self, message: StubMessage) -> None:
        del self.messages[message.id]
        self._log(message.folder_id, message.id, "removed")
        self.recoverable_items.append(message)


@dataclass(frozen=True)
class Grant:
    """Who a valid access token speaks for."""

    principal: str
    """The user's address (delegated) or the application's client id (app-only)."""
    app_only: bool = False
    """Application permission (client credentials): any mailbox of the tenant, like Mail.ReadWrite granted to the app."""


@dataclass
class StubTenant:
    """The whole organisation the stub serves."""

    mailboxes: dict[str, StubMailbox] = field(default_factory=dict)
    delegates: set[tuple[str, str]] = field(default_factory=set)
    """(user address, mailbox address): full access granted to a shared mailbox."""
    delta_generation: int = 0
    """Delta and skip tokens carry the generation they were issued in; older ones are expired (SyncStateNotFound)."""
    lock: threading.RLock = field(default_factory=threading.RLock)

    def add_mailbox(self, address: str, display_name: str | None = None) -> StubMailbox:
        mailbox = StubMailbox(address, display_name or address.split("@")[0])
        self.mailboxes[address.lower()] = mailbox
        return mailbox

    def mailbox(self, address: str) -> StubMailbox | None:
        return self.mailboxes.get(address.lower())

    def grant_delegate(self, user: str, mailbox: str) -> None:
        self.delegates.add((user.lower(), mailbox.lower()))

    def may_open(self, grant: Grant, address: str) -> bool:
        if grant.app_only:
            return True
        return grant.principal.lower() == address.lower() or (grant.principal.lower(), address.lower()) in self.delegates

    def expire_delta_tokens(self) -> None:
        """Every delta token handed out so far becomes unknown to the server (its sync state cache lost them)."""
        self.delta_generation += 1


def received_sequence(count: int, start: datetime | None = None) -> list[datetime]:
    """Distinct, increasing receive times one second apart."""
    first = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    return [first + timedelta(seconds=n) for n in range(count)]


def now() -> float:
    """Wall-clock seconds, the clock the stub stamps actions with."""
    return time.time()
