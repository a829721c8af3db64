"""How the stub decides whether a bearer token is valid and whom it speaks for.

Validation is pluggable (:class:`TokenValidator`): :class:`RegisteredTokens` knows the
tokens a test issued through it, each with its lifetime; :class:`IntrospectedTokens`
asks the local OpenID Connect provider (RFC 7662 token introspection), so tokens the
fetcher's real token layer obtained there are checked, expiry and revocation included.
"""

from __future__ import annotations

import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

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


class IntrospectedTokens:
    """Tokens of an OpenID Connect provider, introspected there (RFC 7662) on every request.

    An active token speaks for the mailbox in its ``username`` claim (the local provider
    puts the signed-in mailbox there for delegated tokens, and the one ``mailbox:ADDRESS``
    scope for app-only tokens: the stand-in for Exchange Online's per-mailbox permissions
    of an application). An inactive one (expired, revoked, unknown) is refused as expired.
    """

    def __init__(self, introspection_url: str, client_id: str, client_secret: str, ca_file: Path) -> None:
        self._url = introspection_url
        self._http = httpx.Client(auth=(client_id, client_secret), verify=ssl.create_default_context(cafile=str(ca_file)), timeout=10)
        self._lock = threading.Lock()
        self.introspected = 0

    def check(self, token: str) -> Grant | TokenRefusal:
        if not token:
            return EMPTY
        with self._lock:
            self.introspected += 1
            answer = self._http.post(self._url, data={"token": token})
        answer.raise_for_status()
        claims = answer.json()
        if not claims.get("active"):
            return EXPIRED
        username = claims.get("username")
        return Grant(username) if isinstance(username, str) else UNKNOWN

    def close(self) -> None:
        self._http.close()
