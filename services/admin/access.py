"""Who may use the admin service, and what they changed: bearer tokens and the audit log.

A token is ``mi_`` followed by 43 characters of url-safe base64 (256 random bits). The
database keeps its SHA-256 only, so a copy of the table lets nobody in. The web page's
session cookie holds the same token; its CSRF token is an HMAC of it, so a page can
prove it was served to the holder of the cookie without any state on the server.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.admin.tables import AdminToken, AuditEntry

TOKEN_PREFIX = "mi_"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_CSRF_PURPOSE = b"mailintake-admin-csrf"


class TokenNameTaken(ValueError):
    """A token of that name exists already; names are the audit log's 'who'."""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_token_for(session_token: str) -> str:
    """The CSRF token that goes with a session: only the holder of the session can compute it."""
    return hmac.new(session_token.encode("utf-8"), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def csrf_token_matches(session_token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token_for(session_token), presented)


@dataclass(frozen=True)
class TokenInfo:
    name: str
    created_at: datetime
    revoked_at: datetime | None


class TokenStore:
    """The ``admin_tokens`` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, name: str) -> str:
        """A new token named ``name``; the only time it is ever returned."""
        if not TOKEN_NAME.match(name):
            raise ValueError(
                f"token name {name!r}: use 1 to 100 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
            )
        token = new_token()
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(AdminToken).values(name=name, token_sha256=token_digest(token)))
        except IntegrityError:
            raise TokenNameTaken(f"a token named {name!r} exists already; revoke it or pick another name") from None
        return token

    def register(self, name: str, token: str, actor: str) -> str:
        """Make ``token``, given from outside (a deployment's secret), the token named ``name``.

        Returns what happened: ``added``; ``replaced`` (the name held another token: the
        secret was rotated, and the old token stops working); ``unchanged``; or
        ``revoked`` (this very token was revoked, and a restart must not bring it back).
        """
        if not token.startswith(TOKEN_PREFIX) or len(token) < len(TOKEN_PREFIX) + 32:
            raise ValueError(f"a token must start with {TOKEN_PREFIX!r} and have at least 32 characters after it")
        digest = token_digest(token)
        try:
            with self._engine.begin() as connection:
                row = connection.execute(
                    select(AdminToken.token_sha256, AdminToken.revoked_at).where(AdminToken.name == name).with_for_update()
                ).first()
                if row is None:
                    connection.execute(insert(AdminToken).values(name=name, token_sha256=digest))
                    AuditLog.write(connection, actor, "token.create", name)
                    return "added"
                if row.token_sha256 == digest:
                    return "unchanged" if row.revoked_at is None else "revoked"
                connection.execute(
                    update(AdminToken)
                    .where(AdminToken.name == name)
                    .values(token_sha256=digest, created_at=func.now(), revoked_at=None)
                )
                AuditLog.write(connection, actor, "token.replace", name)
                return "replaced"
        except IntegrityError:
            # Another replica registered it at the same moment: its row decides.
            return self.register(name, token, actor)

    def holder(self, token: str) -> str | None:
        """The name of the live token ``token``, or None."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        with self._engine.connect() as connection:
            return connection.scalar(
                select(AdminToken.name).where(
                    AdminToken.token_sha256 == token_digest(token), AdminToken.revoked_at.is_(None)
                )
            )

    def revoke(self, name: str) -> bool:
        with self._engine.begin() as connection:
            result = connection.execute(
                update(AdminToken)
                .where(AdminToken.name == name, AdminToken.revoked_at.is_(None))
                .values(revoked_at=func.now())
            )
        return result.rowcount > 0

    def tokens(self) -> list[TokenInfo]:
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(AdminToken.name, AdminToken.created_at, AdminToken.revoked_at).order_by(AdminToken.name)
            ).all()
        return [TokenInfo(row.name, row.created_at, row.revoked_at) for row in rows]


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    action: str
    target: str
    fields: tuple[str, ...]


class AuditLog:
    """The ``admin_audit_log`` table: append and read, never update."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, actor: str, action: str, target: str, fields: Sequence[str] = ()) -> None:
        with self._engine.begin() as connection:
            self.write(connection, actor, action, target, fields)

    @staticmethod
    def write(connection: Connection, actor: str, action: str, target: str, fields: Sequence[str] = ()) -> None:
        """Append an entry in the caller's transaction, so it stands or falls with the change it records."""
        connection.execute(insert(AuditEntry).values(actor=actor, action=action, target=target, fields=list(fields)))

    def entries(self, target: str | None = None, limit: int = 100) -> list[AuditRecord]:
        """Newest first."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
        if target is not None:
            query = query.where(AuditEntry.target == target)
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [AuditRecord(row.at, row.actor, row.action, row.target, tuple(row.fields)) for row in rows]
