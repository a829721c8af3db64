"""Pure helpers for mail addresses, tested directly."""

from __future__ import annotations

from email.utils import getaddresses


def normalise_address(address: str) -> str:
    """Lower-case an address and strip the brackets and whitespace around it.

    >>> normalise_address(" <Max.Mustermann@Example.COM> ")
    'max.mustermann@example.com'
    """
    return address.strip().strip("<>").strip().lower()


def first_address(header_value: str | None) -> tuple[str | None, str | None]:
    """The (display name, normalised address) of the first address in a header value,
    or (None, None) when the value holds no address."""
    if not header_value:
        return None, None
    for name, address in getaddresses([header_value]):
        if "@" in address:
            return (name or None), normalise_address(address)
    return None, None


def local_part(address: str) -> str:
    """The part before the last '@': ``max.mustermann`` for ``max.mustermann@example.com``."""
    return address.rsplit("@", 1)[0]


def domain(address: str) -> str:
    """The part after the last '@', lower-cased."""
    return address.rsplit("@", 1)[1].lower()

