"""Consent flows between their start and the provider's answer (table ``admin_pending_consents``).

A flow is kept on the server, not in the browser: its PKCE verifier and nonce, and the
account being connected with its client secret, are encrypted with the accounts' key.
It is bound to the admin session that started it (the SHA-256 of its token: a token
revoked meanwhile ends the flow) and to that browser (the SHA-256 of a random cookie the
start sets), taken once (the callback deletes it as it reads it), and it expires.

The browser cookie, not the session cookie, binds the callback: the session cookie is
SameSite=Strict, and a browser does not send it on the provider's redirect back, which
is a navigation from another site. The flow cookie is SameSite=Lax, valid for the
callback path only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine, delete, func, insert, literal_column, select

from services.admin.access import token_digest
from services.admin.tables import AdminToken, PendingConsent
from services.fetcher.password_cipher import PasswordCipher, PasswordDecryptionError

FLOW_COOKIE = "mailintake_admin_consent"
LIFETIME = timedelta(minutes=10)
"""How long the admin may take at the identity provider."""


class ConsentNotFound(LookupError):
    """No live flow matches the callback; the message says why, for the admin."""


@dataclass(frozen=True)
class TakenConsent:
    actor: str
    account_id: str
    editing: bool
    flow: dict[str, Any]
    """The identity provider flow's state (see ``consent_flow.PendingConsent.flow``)."""
    account: dict[str, Any]
    """The account document being connected, secrets included."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class PendingConsentStore:
    def __init__(self, engine: Engine, cipher: PasswordCipher) -> None:
        self._engine = engine
        self._cipher = cipher

    def keep(
        self, *, state: str, session_token: str, actor: str, account_id: str, editing: bool,
        flow: dict[str, Any], account: dict[str, Any],
    ) -> str:
        """Keep a started flow; returns the value of the browser's flow cookie."""
        browser = secrets.token_urlsafe(32)
        payload = self._cipher.encrypt(SecretStr(json.dumps({"flow": flow, "account": account})))
        with self._engine.begin() as connection:
            # Flows nobody finished go when the next one starts.
            connection.execute(delete(PendingConsent).where(PendingConsent.expires_at < func.now()))
            connection.execute(
                insert(PendingConsent).values(
                    state=state,
                    session_sha256=token_digest(session_token),
                    browser_sha256=_digest(browser),
                    actor=actor,
                    account_id=account_id,
                    editing=editing,
                    payload=payload,
                    expires_at=func.now() + LIFETIME,
                )
            )
        return browser

    def take(self, state: str | None, browser: str | None) -> TakenConsent:
        """The flow of ``state``, removed so it cannot be used again; :class:`ConsentNotFound` if none may finish."""
        if not state:
            raise ConsentNotFound("the identity provider's answer has no state")
        # Taken in its own transaction, committed before anything is checked: a flow that
        # fails a check is spent too, so nobody can try it again.
        with self._engine.begin() as connection:
            row = connection.execute(
                delete(PendingConsent)
                .where(PendingConsent.state == state)
                .returning(
                    PendingConsent.session_sha256,
                    PendingConsent.browser_sha256,
                    PendingConsent.actor,
                    PendingConsent.account_id,
                    PendingConsent.editing,
                    PendingConsent.payload,
                    (PendingConsent.expires_at > func.now()).label("live"),
                )
            ).first()
            session_live = row is not None and connection.scalar(
                select(literal_column("1")).where(
                    AdminToken.token_sha256 == row.session_sha256, AdminToken.revoked_at.is_(None)
                )
            ) is not None
        if row is None:
            raise ConsentNotFound("no consent flow has this state: it was used already, or never started here")
        if not row.live:
            raise ConsentNotFound(f"the consent took longer than {LIFETIME.seconds // 60} minutes: start it again")
        if browser is None or not secrets.compare_digest(_digest(browser), row.browser_sha256):
            raise ConsentNotFound("this consent flow was started in another browser (its cookie is missing or wrong)")
        if not session_live:
            raise ConsentNotFound("the admin token that started this consent flow was revoked meanwhile")
        try:
            document = json.loads(self._cipher.decrypt(row.payload, row.account_id).get_secret_value())
        except PasswordDecryptionError:
            raise ConsentNotFound("this consent flow was kept under an encryption key that is gone: start it again") from None
        return TakenConsent(row.actor, row.account_id, row.editing, document["flow"], document["account"])
