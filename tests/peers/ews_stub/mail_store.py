"""The stub's in-memory Exchange organisation: users, mailboxes, folders, items, delegates.

Ids are opaque to clients, as EWS ids are, but each one names the mailbox it belongs
to, so every operation can check that the caller may open that mailbox.
"""

from __future__ import annotations

import base64
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: Distinguished folders every stub mailbox has (EWS DistinguishedFolderId values).
DISTINGUISHED = {
    "root": ("", None),
    "msgfolderroot": ("Top of Information Store", "root"),
    "inbox": ("Inbox", "msgfolderroot"),
    "deleteditems": ("Deleted Items", "msgfolderroot"),
    "sentitems": ("Sent Items", "msgfolderroot"),
}

_counter = itertools.count(1)


def new_id(mailbox: str, kind: str) -> str:
    raw = f"{kind}\0{mailbox}\0{next(_counter)}".encode()
    return "AAMk" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def mailbox_of(opaque_id: str) -> str | None:
    """The mailbox address an id was issued in; None for an id the stub never issued."""
    try:
        body = opaque_id.removeprefix("AAMk")
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return raw.decode().split("\0")[1]
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


@dataclass
class StubItem:
    item_id: str
    mime: bytes
    received: datetime
    is_read: bool = False
    version: int = 1

    @property
    def change_key(self) -> str:
        return f"CQAAAB{self.version:08d}"


@dataclass
class StubFolder:
    folder_id: str
    name: str
    parent_id: str | None
    distinguished: str | None = None
    items: dict[str, StubItem] = field(default_factory=dict)

    @property
    def change_key(self) -> str:
        return "AQAAAA"


@dataclass
class StubMailbox:
    address: str
    display_name: str
    folders: dict[str, StubFolder] = field(default_factory=dict)
    soft_deleted: list[StubItem] = field(default_factory=list)
    """Items removed with DeleteType=SoftDelete (Exchange keeps them in Recoverable Items)."""

    def __post_init__(self) -> None:
        by_name: dict[str, str] = {}
        for distinguished, (name, parent) in DISTINGUISHED.items():
            folder = StubFolder(new_id(self.address, "F"), name, by_name.get(parent) if parent else None, distinguished)
            self.folders[folder.folder_id] = folder
            by_name[distinguished] = folder.folder_id

    def distinguished(self, name: str) -> StubFolder | None:
        return next((f for f in self.folders.values() if f.distinguished == name), None)

    def children(self, folder_id: str) -> list[StubFolder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def _start_of(self, path: str) -> tuple[StubFolder, list[str]]:
        names = [n for n in path.split("/") if n]
        if names and names[0].lower() == "inbox":
            return self.distinguished("inbox"), names[1:]
        return self.distinguished("msgfolderroot"), names

    def add_folder(self, path: str) -> StubFolder:
        """Create ``path`` (``A/B``) below the top of the information store, or below Inbox when it starts with it."""
        parent, names = self._start_of(path)
        for name in names:
            existing = next((f for f in self.children(parent.folder_id) if f.name.lower() == name.lower()), None)
            if existing is None:
                existing = StubFolder(new_id(self.address, "F"), name, parent.folder_id)
                self.folders[existing.folder_id] = existing
            parent = existing
        return parent

    def folder_at(self, path: str) -> StubFolder:
        folder, names = self._start_of(path)
        for name in names:
            folder = next(f for f in self.children(folder.folder_id) if f.name.lower() == name.lower())
        return folder

    def deliver(self, mime: bytes, folder: StubFolder | None = None, *, received: datetime | None = None, is_read: bool = False) -> str:
        """Put a mail into ``folder`` (Inbox by default); returns its item id."""
        target = folder or self.distinguished("inbox")
        item = StubItem(new_id(self.address, "I"), mime, received or datetime.now(UTC), is_read)
        target.items[item.item_id] = item
        return item.item_id

    def find_item(self, item_id: str) -> tuple[StubFolder, StubItem] | None:
        for folder in self.folders.values():
            if item_id in folder.items:
                return folder, folder.items[item_id]
        return None

    @property
    def inbox(self) -> StubFolder:
        return self.distinguished("inbox")


@dataclass(frozen=True)
class StubUser:
    """A person who can log in: by ``DOMAIN\\name`` and password (Basic) or by Kerberos ``principal``."""

    name: str
    password: str
    mailbox: str
    principal: str | None = None

    def answers_to(self, login: str) -> bool:
        return login.lower() in {self.name.lower(), (self.principal or "").lower()} or login.lower().endswith(
            "\\" + self.name.lower()
        )


@dataclass
class StubExchange:
    """The whole organisation the stub serves."""

    users: list[StubUser] = field(default_factory=list)
    mailboxes: dict[str, StubMailbox] = field(default_factory=dict)
    delegates: set[tuple[str, str]] = field(default_factory=set)
    """(user name, mailbox address) pairs with full delegate access."""

    def add_user(self, name: str, password: str, address: str, principal: str | None = None) -> StubMailbox:
        self.users.append(StubUser(name, password, address, principal))
        return self.add_mailbox(address, name)

    def add_mailbox(self, address: str, display_name: str) -> StubMailbox:
        mailbox = StubMailbox(address, display_name)
        self.mailboxes[address.lower()] = mailbox
        return mailbox

    def grant_delegate(self, user: str, mailbox: str) -> None:
        self.delegates.add((user.lower(), mailbox.lower()))

    def user_for_login(self, login: str) -> StubUser | None:
        return next((u for u in self.users if u.answers_to(login)), None)

    def may_open(self, user: StubUser, address: str) -> bool:
        return address.lower() == user.mailbox.lower() or (user.name.lower(), address.lower()) in self.delegates

    def mailbox(self, address: str) -> StubMailbox | None:
        return self.mailboxes.get(address.lower())

    def resolve(self, text: str) -> list[StubMailbox]:
        """Mailboxes whose address, local part or display name matches, as ResolveNames does."""
        needle = text.lower().removeprefix("smtp:")
        return [
            m
            for m in self.mailboxes.values()
            if needle in (m.address.lower(), m.address.lower().split("@")[0], m.display_name.lower())
        ]


def received_sequence(count: int, start: datetime | None = None) -> list[datetime]:
    """Distinct, increasing receive times one second apart (EWS reports whole seconds)."""
    first = start or datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    return [first + timedelta(seconds=n) for n in range(count)]
