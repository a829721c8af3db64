"""How the stub decides whether a bearer token is valid and whom it speaks for.

Validation is pluggable (:class:`TokenValidator`): :class:`RegisteredTokens` knows the
tokens a test issued through it, each with its lifetime; a validator that introspects
tokens at the local OpenID Connect provider (RFC 7662) can take its place without
changing the stub.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from .mailboxes import Grant


@dataclass(frozen=True)
class TokenRefusal:
    """Why a token is not accepted, in Graph's words (``error.message`` of InvalidAuthenticationToken)."""

    message: str


EMPTY = TokenRefusal("Access token is empty.")
EXPIRED = TokenRefusal("Access token has expired or is not yet valid.")
MALFORMED = TokenRefusal("CompactToken parsing failed with error code: 80049217")
UNKNOWN = TokenRefusal("Access token validation failure. Invalid audience.")


class TokenValidator(Protocol):
    def check(self, token: str) -> Grant | TokenRefusal: ...


class RegisteredTokens:
    """Tokens issued by the test through :meth:`issue`, valid for their lifetime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[Grant, float]] = {}
        self.issued: list[str] = []

    def issue(self, principal: str, *, app_only: bool = False, lifetime: float = 3600.0) -> str:
        token = "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (Grant(principal, app_only), time.monotonic() + lifetime)
            self.issued.append(token)
        return token

    def expire(self, token: str) -> None:
        with self._lock:
            grant, _ = self._tokens[token]
            self._tokens[token] = (grant, time.monotonic() - 1)

    def check(self, token: str) -> Grant | TokenRefusal:
        if not token:
            return EMPTY
        if not token.startswith("eyJ"):
            return MALFORMED
        with self._lock:
            found = self._tokens.get(token)
        if found is None:
            return UNKNOWN
        grant, expires = found
        return grant if time.monotonic() < expires else EXPIRED
