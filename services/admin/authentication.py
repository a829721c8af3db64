"""Who is calling: a bearer token (``Authorization: Bearer mi_...``) for the API, an
OIDC access token where one is configured (``services.admin.oidc``), or the web page's
session cookie holding an admin token. Nothing is open by default: without a valid
token every route but ``/livez``, ``/readyz``, the login page and the OpenAPI document
answers 401.

A request that authenticates with the cookie and changes something must also carry
the session's CSRF token (the ``X-CSRF-Token`` header, or the ``csrf_token`` form
field on the page's forms): a browser sends the cookie on its own, but only a page we
served knows the token. A bearer token is never sent by a browser on its own, so
bearer requests need no CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.admin.access import TOKEN_PREFIX, TokenStore, csrf_token_for, csrf_token_matches
from services.admin.oidc import OidcRefused, OidcVerifier

SESSION_COOKIE = "mailintake_admin_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A token from `mailintake admin token create NAME`, or an OIDC access token where one is configured.",
)


@dataclass(frozen=True)
class Actor:
    """An authenticated caller. ``name`` is what the audit log records as "who"."""

    name: str
    # repr=False: an actor may end up in a log line or a traceback; its token must not.
    session_token: str | None = field(default=None, repr=False)
    """The cookie's token when the caller came through the web page, else None."""

    @property
    def csrf_token(self) -> str | None:
        return None if self.session_token is None else csrf_token_for(self.session_token)


def token_store(request: Request) -> TokenStore:
    return request.app.state.token_store


def actor_from_cookie(request: Request) -> Actor | None:
    token = request.cookies.get(SESSION_COOKIE)
    holder = None if token is None else token_store(request).holder(token)
    return None if holder is None else Actor(f"token:{holder}", session_token=token)


def authenticated(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Actor:
    """The caller of an API route, or 401 (no or unknown token) / 403 (cookie without CSRF token)."""
    if credentials is not None:
        token = credentials.credentials
        oidc: OidcVerifier | None = request.app.state.oidc_verifier
        if oidc is not None and not token.startswith(TOKEN_PREFIX):
            try:
                return Actor(oidc.actor(token))
            except OidcRefused as exc:
                raise _unauthorized(str(exc)) from None
        holder = token_store(request).holder(token)
        if holder is None:
            raise _unauthorized("the bearer token is unknown or revoked")
        return Actor(f"token:{holder}")
    actor = actor_from_cookie(request)
    if actor is None:
        raise _unauthorized("send Authorization: Bearer <token> (`mailintake admin token create NAME` makes one)")
    if request.method not in SAFE_METHODS and not csrf_token_matches(actor.session_token, request.headers.get(CSRF_HEADER)):
        raise HTTPException(status_code=403, detail=f"CSRF token missing or wrong: send the page's token in {CSRF_HEADER}")
    return actor


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


Authenticated = Annotated[Actor, Depends(authenticated)]
