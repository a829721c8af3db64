"""Pure helpers for mail addresses, tested directly.

Normal form of an address (the sender, the bundle key, the requester):

* lower-cased, local part included: mailboxes are case-insensitive in practice, and
  one requester must not become two over ``Max@`` and ``max@``;
* the domain in Unicode (U-labels), NFC-normalised: ``xn--mnchen-3ya.de`` becomes
  ``münchen.de``, so an IDN address reads the same whether the client sent it in
  punycode or, under RFC 6532, in UTF-8. Punycode that is not valid IDNA stays as written;
* a quoted local part loses its quotes when it needs none (``"max.m"@x`` is ``max.m@x``
  per RFC 5321 4.1.2) and keeps them when it does (``"max m"@x``).
"""

from __future__ import annotations

import re
import unicodedata
from email.utils import getaddresses

import idna

from mailintake.address_syntax import ATEXT, DOT_ATOM
from services.classifier.headers import decode_words, unfold

MAX_ADDRESSES = 50
"""At most this many addresses are read from one header (a From with thousands is hostile)."""

MAX_ADDRESS_CHARS = 320
"""Longest address kept: 64 for the local part, 255 for the domain, the '@'."""

_DOT_ATOM = re.compile(rf"^{DOT_ATOM}$")

_PLAIN_ADDRESS = rf"{DOT_ATOM}@{DOT_ATOM}"
# One mailbox in the forms nearly every From header takes: ``"Name" <a@b>``,
# ``Name Words <a@b>``, ``<a@b>`` or ``a@b``, with dot-atom addresses and no comments,
# escapes, groups or dots in the name. The stdlib's address parser costs ~20 us for
# such a value, the expression ~2; anything else still goes to the parser.
_PLAIN_MAILBOX = re.compile(
    rf'[ \t]*(?:(?:"(?P<quoted>[^"\\\r\n]*)"|(?P<phrase>{ATEXT}(?:[ \t]+{ATEXT})*))[ \t]*)?'
    rf"<(?P<angled>{_PLAIN_ADDRESS})>[ \t]*"
    rf"|[ \t]*(?P<bare>{_PLAIN_ADDRESS})[ \t]*"
)


def normalise_local_part(local: str) -> str:
    """Lower-case; drop quotes a local part does not need.

    >>> normalise_local_part('"Max.Mustermann"')
    'max.mustermann'
    >>> normalise_local_part('"max mustermann"')
    '"max mustermann"'
    """
    local = unicodedata.normalize("NFC", local).lower()
    if len(local) >= 2 and local[0] == local[-1] == '"':
        inner = local[1:-1]
        if _DOT_ATOM.match(inner):
            return inner
    return local


def unicode_domain(domain_name: str) -> str:
    """The domain in lower-case Unicode, with punycode labels decoded where they are valid IDNA.

    >>> unicode_domain("XN--MNCHEN-3YA.de")
    'münchen.de'
    >>> unicode_domain("xn--broken-.example")
    'xn--broken-.example'
    """
    domain_name = unicodedata.normalize("NFC", domain_name.strip().rstrip(".")).lower()
    if "xn--" not in domain_name:
        return domain_name
    labels = []
    for label in domain_name.split("."):
        if label.startswith("xn--"):
            try:
                label = idna.decode(label)
            except (idna.IDNAError, UnicodeError, ValueError):
                pass
        labels.append(label)
    return ".".join(labels)


def normalise_address(address: str) -> str:
    """The normal form (see the module docstring) of one bare address.

    >>> normalise_address(" <Max.Mustermann@XN--MNCHEN-3YA.DE> ")
    'max.mustermann@münchen.de'
    """
    address = address.strip().strip("<>").strip()
    if "@" not in address:
        return unicodedata.normalize("NFC", address).lower()
    local, _, domain_name = address.rpartition("@")
    return f"{normalise_local_part(local)}@{unicode_domain(domain_name)}"


def plain_mailbox(value: str) -> tuple[str, str] | None:
    """(raw display name, address) of ``value`` when it is one mailbox in a plain form
    (see ``_PLAIN_MAILBOX``), as the stdlib's ``getaddresses`` reads it; otherwise None.

    >>> plain_mailbox('"Kunde 7" <k7@example.com>')
    ('Kunde 7', 'k7@example.com')
    >>> plain_mailbox("Max   Mustermann <max@example.com>")
    ('Max Mustermann', 'max@example.com')
    >>> plain_mailbox("a@example.com (Max)") is None
    True
    """
    match = _PLAIN_MAILBOX.fullmatch(value)
    if match is None:
        return None
    quoted, phrase, angled, bare = match.group("quoted", "phrase", "angled", "bare")
    if bare is not None:
        return "", bare
    # The parser joins a name's words with one space; a quoted name keeps its own spacing.
    return (quoted if quoted is not None else " ".join(phrase.split()) if phrase else ""), angled


def raw_addresses(unfolded: str) -> list[tuple[str, str]]:
    """(raw display name, raw address) of every entry of an unfolded header value, as the
    stdlib's ``getaddresses`` reads them: by :func:`plain_mailbox` where it can."""
    plain = plain_mailbox(unfolded)
    return [plain] if plain is not None else getaddresses([unfolded])


def addresses(raw_value: str | None) -> list[tuple[str | None, str]]:
    """The (decoded display name, normalised address) of every address in a raw header value.

    The structure is parsed before the display names are decoded: an encoded word may
    hide a comma (``=?utf-8?q?M=C3=BCller=2C_J?= <j@x>``) that must not split the address.
    Entries without an '@' (group names, ``undisclosed-recipients:;``, a bare ``<>``) are skipped.
    """
    if not raw_value:
        return []
    found: list[tuple[str | None, str]] = []
    for name, address in raw_addresses(unfold(raw_value)):
        if "@" not in address or len(address) > MAX_ADDRESS_CHARS:
            continue
        if not address.isascii():
            # RFC 6532 allows UTF-8 addresses; a raw 8-bit byte here is a surrogate escape.
            address = decode_words(address)
        display = decode_words(name)[:MAX_ADDRESS_CHARS] if name else ""
        found.append((display or None, normalise_address(address)))
        if len(found) >= MAX_ADDRESSES:
            break
    return found


def first_address(raw_value: str | None) -> tuple[str | None, str | None]:
    """The (display name, normalised address) of the first address in a header value,
    or (None, None) when the value holds no address."""
    found = addresses(raw_value)
    return found[0] if found else (None, None)


def local_part(address: str) -> str:
    """The part before the last '@': ``max.mustermann`` for ``max.mustermann@example.com``."""
    return address.rsplit("@", 1)[0]


def domain(address: str) -> str:
    """The part after the last '@', lower-cased."""
    return address.rsplit("@", 1)[1].lower()
