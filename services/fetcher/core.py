"""The fetcher's pure core: which mails a poll fetches, how credentials are encoded,
when a failing account is polled again, and the record each mail becomes."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from mailintake.contracts.records import ClaimCheck, MailRaw, Protocol
from services.fetcher.account import Account

T = TypeVar("T")

MAX_BACKOFF_SECONDS = 900.0


@dataclass(frozen=True)
class Cursor:
    """The durable high-water mark of one folder."""

    uidvalidity: int | None
    last_uid: int
    poll_cycle: int


@dataclass(frozen=True)
class FetchPlan:
    uids: tuple[int, ...]
    uidvalidity_changed: bool


def plan_fetch(cursor: Cursor, uidvalidity: int, found_uids: list[int]) -> FetchPlan:
    """The UIDs to fetch, oldest first.

    After a UIDVALIDITY change every old UID is meaningless, so everything in the folder
    is fetched again under new source ids: nothing can be lost, and the ticketer's second
    key (account + Message-ID) keeps mails it already handled from becoming tickets
    twice. A mail without a Message-ID has no such second key and is handled again.
    Otherwise only UIDs above the mark count (a search for ``N:*`` also returns the
    highest UID below N, which must not be fetched again).
    """
    if cursor.uidvalidity is not None and cursor.uidvalidity != uidvalidity:
        return FetchPlan(tuple(sorted(found_uids)), True)
    return FetchPlan(tuple(sorted(u for u in found_uids if u > cursor.last_uid)), False)


def header_block(raw: bytes) -> bytes:
    """The mail up to and including the blank line that ends its headers (all of it if there is none)."""
    end = raw.find(b"\r\n\r\n")
    end = end + 4 if end >= 0 else len(raw)
    # An LF-only blank line can only end the headers earlier; searching the whole body
    # for one costs more than the rest of the Message-ID scan.
    lf_end = raw.find(b"\n\n", 0, end)
    return raw[: lf_end + 2] if lf_end >= 0 else raw[:end]


# What follows a header's name: the obsolete syntax's blanks, the colon, the value and
# its continuation lines (folding).
_AFTER_FIELD_NAME = re.compile(rb"[ \t]*:(.*(?:\r?\n[ \t].*)*)")
_FOLDING = re.compile(rb"\r?\n")
# The form the classifier reads References and In-Reply-To in (one token in angle brackets),
# without control characters, and at most a header line long (998).
_MSG_ID = re.compile(r"<[^<>\x00-\x20\x7f]{1,996}>")
# What some broken mailers write instead: id-left@id-right without the brackets.
_BARE_MSG_ID = re.compile(r"[^<>()@\x00-\x20\x7f]{1,498}@[^<>()@\x00-\x20\x7f]{1,498}")


def without_comments(value: str) -> str:
    """``value`` without its RFC 5322 comments (nested, with quoted pairs); a ``(`` inside ``<...>`` is kept."""
    kept, depth, escaped, in_angle = [], 0, False, False
    for char in value:
        if depth:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(" and not in_angle:
            depth = 1
        else:
            kept.append(char)
            if char in "<>":
                in_angle = char == "<"
    return "".join(kept)


def message_id_of(raw: bytes) -> str | None:
    """The first Message-ID header's ``<id>``, read from the header block only; None if there is none.

    A scan instead of the email package: the header parser cost more per mail than
    fetching the mail. The value is unfolded and its comments dropped; 8-bit bytes
    cannot break it (they are replaced, and a msg-id is ASCII). A bare ``id@host`` gets
    its brackets; anything else (``<>``, junk) is None, because the ticketer takes
    account + Message-ID as the identity of a mail, and mails sharing a junk value would
    be taken for copies of one another.
    """
    block = header_block(raw)
    # A case-insensitive regex search tries every position; lower() and find() are C loops.
    lowered, at = block.lower(), -1
    while (at := lowered.find(b"message-id", at + 1)) >= 0:
        if (at == 0 or lowered[at - 1] == 0x0A) and (field := _AFTER_FIELD_NAME.match(block, at + 10)):
            break
    else:
        return None
    value = _FOLDING.sub(b"", field.group(1)).decode("utf-8", "replace")
    if "(" in value:
        value = without_comments(value)
    if token := _MSG_ID.search(value):
        return token.group()
    value = value.strip()
    return f"<{value}>" if _BARE_MSG_ID.fullmatch(value) else None


def mail_record(
    account: Account,
    *,
    source_id: str,
    raw: bytes,
    poll_cycle: int,
    fetched_at: datetime,
    claim_check: ClaimCheck | None,
) -> MailRaw:
    """The ``mail.raw`` record of one fetched mail; ``raw`` travels inline unless a claim check is given."""
    return MailRaw(
        account_id=account.id,
        account_name=account.name,
        protocol=Protocol(account.protocol.value.upper()),
        source_id=source_id,
        message_id=message_id_of(raw),
        poll_cycle=poll_cycle,
        poll_interval_seconds=account.poll_interval_seconds,
        fetched_at=fetched_at,
        size=len(raw),
        raw=None if claim_check else raw,
        claim_check=claim_check,
        sender_identity=account.sender,
        ticket_options=account.ticket_options,
    )


def imap_source_id(uidvalidity: int, uid: int) -> str:
    return f"imap:{uidvalidity}:{uid}"


def imap_uid(source_id: str) -> int:
    """The UID inside an ``imap:UIDVALIDITY:UID`` source id."""
    return int(source_id.rsplit(":", 1)[1])


# One FETCH response in the shape servers send for ``UID FETCH <set> BODY.PEEK[]``, as
# imaplib hands it over: this line, then the literal, then ")" as an item of its own.
_UID_AND_BODY = re.compile(rb"[0-9]+ \(UID ([0-9]+) BODY\[\] \{([0-9]+)\}")


def imap_bodies(fetch_data: Sequence[bytes | tuple[bytes, bytes] | None]) -> dict[int, bytes] | None:
    """UID -> bytes from imaplib's untagged FETCH data, or None when any response has
    another shape (an unsolicited FLAGS update, other items, another order).

    imapclient's general parser tokenises every response in Python and cost about as
    much as the fetch itself; this reads the usual shape with one regex match per mail
    and leaves every other shape to that parser.
    """
    bodies: dict[int, bytes] = {}
    closing = False
    for item in fetch_data:
        if closing:
            if item != b")":
                return None
            closing = False
        elif (
            isinstance(item, tuple)
            and (head := _UID_AND_BODY.fullmatch(item[0]))
            and int(head.group(2)) == len(item[1])
        ):
            bodies[int(head.group(1))] = item[1]
            closing = True
        elif item is not None:
            return None
    return None if closing else bodies


_UID_AND_SIZE = re.compile(rb"[0-9]+ \(UID ([0-9]+) RFC822\.SIZE ([0-9]+)\)")


def imap_sizes(fetch_data: Sequence[bytes | tuple[bytes, bytes] | None]) -> dict[int, int] | None:
    """UID -> octets from imaplib's untagged data of ``UID FETCH <set> (RFC822.SIZE)``, or
    None when any response has another shape (left to imapclient's parser, as in
    :func:`imap_bodies`)."""
    sizes: dict[int, int] = {}
    for item in fetch_data:
        if isinstance(item, bytes) and (found := _UID_AND_SIZE.fullmatch(item)):
            sizes[int(found.group(1))] = int(found.group(2))
        elif item is not None:
            return None
    return sizes


def pop3_source_id(uidl: str) -> str:
    return f"pop3:{uidl}"


@dataclass(frozen=True)
class PrefixedSourceIds:
    """Source ids that are ``prefix`` plus the server's own id of the mail (an EWS item
    id, a Graph message id), which the after-fetch action needs back."""

    prefix: str

    def source_id(self, native_id: str) -> str:
        return self.prefix + native_id

    def native_id(self, source: str) -> str:
        if not source.startswith(self.prefix):
            raise ValueError(f"{source!r} is not a source id of this protocol (they start with {self.prefix!r})")
        return source.removeprefix(self.prefix)


@dataclass(frozen=True)
class Pop3Plan:
    """What one POP3 session does with the maildrop's UIDL listing."""

    pending: tuple[tuple[int, str], ...]
    """(message number, UIDL) of mails not produced yet, in maildrop order (oldest first)."""
    leftovers: tuple[tuple[int, str], ...]
    """Mails produced and acknowledged before that are still on the server."""
    vanished: frozenset[str]
    """Recorded UIDLs the server no longer lists; their records can go."""


def parse_uidl_listing(lines: Sequence[bytes]) -> list[tuple[int, str]]:
    """``UIDL`` response lines (``b"1 000000014ab0"``) as (message number, UIDL)."""
    listing = []
    for line in lines:
        number, _, uidl = line.decode("ascii", "replace").strip().partition(" ")
        if number.isdigit() and uidl.strip():
            listing.append((int(number), uidl.strip()))
    return listing


def plan_pop3(listing: Sequence[tuple[int, str]], seen: set[str]) -> Pop3Plan:
    """Split the server's listing by what was produced before (``seen``).

    A UIDL the server lists twice (which RFC 1939 forbids) is taken once, at its first
    position, so one mail cannot become two records in one poll.
    """
    pending, leftovers, listed = [], [], set()
    for number, uidl in sorted(listing):
        if uidl in listed:
            continue
        listed.add(uidl)
        (leftovers if uidl in seen else pending).append((number, uidl))
    return Pop3Plan(tuple(pending), tuple(leftovers), frozenset(seen - listed))


def sasl_plain(username: str, password: str) -> bytes:
    """The SASL PLAIN message (RFC 4616): empty authzid, NUL, authcid, NUL, password, in UTF-8.

    The user name goes in as given, so ``Domain\\User\\Alias`` reaches the server intact.
    """
    return f"\0{username}\0{password}".encode("utf-8")


#: The SASL mechanisms that carry an OAuth2 bearer token, in the order we prefer them:
#: XOAUTH2 is what Exchange Online and Gmail accept; OAUTHBEARER is the standard (RFC 7628).
BEARER_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


def choose_bearer_mechanism(offered: set[str] | frozenset[str], preferred: Sequence[str] = BEARER_MECHANISMS) -> str | None:
    """The first of ``preferred`` the server offers (upper-case mechanism names), or None."""
    return next((mechanism for mechanism in preferred if mechanism in offered), None)


def sasl_bearer(mechanism: str, username: str, token: str, host: str, port: int) -> bytes:
    """The client's first SASL message carrying ``token`` for mailbox ``username``.

    XOAUTH2 (Microsoft's and Google's): ``user=U^Aauth=Bearer T^A^A``. OAUTHBEARER (RFC 7628):
    a GS2 header naming ``username`` as authorization identity (',' and '=' escaped),
    then host, port and the bearer token. For a shared mailbox ``username`` is the shared
    mailbox's address while the token is the delegate's.
    """
    if mechanism == "XOAUTH2":
        return f"user={username}\x01auth=Bearer {token}\x01\x01".encode()
    if mechanism == "OAUTHBEARER":
        identity = username.replace("=", "=3D").replace(",", "=2C")
        return f"n,a={identity},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()
    raise ValueError(f"not a bearer-token mechanism: {mechanism}")


def sasl_bearer_abort(mechanism: str) -> bytes:
    """The client's answer to the server's error challenge, after which the server sends
    its final refusal: an empty response for XOAUTH2, a single ^A for OAUTHBEARER (RFC 7628 3.2.3)."""
    return b"\x01" if mechanism == "OAUTHBEARER" else b""


def imap_quoted(text: str) -> str:
    """``text`` as an IMAP quoted string (RFC 3501): backslash and double quote escaped.

    LOGIN needs this for user names like ``Domain\\User``: a backslash is not allowed
    in an atom, and sent bare the server answers BAD.
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def backoff_seconds(interval: int, failures: int, rng: random.Random) -> float:
    """Seconds until a failing account is polled again: the interval doubled per
    consecutive failure, capped at 15 minutes, with +-20 % jitter so that accounts
    failing together (a server restart) do not retry in lockstep; never below the interval."""
    base = min(interval * (2 ** max(failures - 1, 0)), MAX_BACKOFF_SECONDS)
    return max(float(interval), base * rng.uniform(0.8, 1.2))


def chunks_by_size(ids: Sequence[str], sizes: Mapping[str, int], max_bytes: int) -> Iterator[list[str]]:
    """``ids`` in order, cut into chunks of at most ``max_bytes`` by ``sizes``; a mail
    larger than that (or of unknown size) is a chunk of its own."""
    chunk: list[str] = []
    total = 0
    for item in ids:
        size = sizes.get(item, max_bytes)
        if chunk and total + size > max_bytes:
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += size
    if chunk:
        yield chunk


def chunked(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
