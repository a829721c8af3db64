"""OAuth2 access tokens for the ``oauth2_*`` accounts: obtained, cached, refreshed before
they expire, and a refusal reported with the identity provider's exact words.

- provider ``microsoft``: msal's ``ConfidentialClientApplication`` (a client secret, or a
  certificate: private key plus SHA-1 thumbprint). An ``authority`` that is not
  login.microsoftonline.com is handed to msal as a generic OpenID Connect authority
  (``oidc_authority``), which is how the tests point msal at the local provider.
- provider ``oidc``: the issuer's discovery document, then its token endpoint (RFC 6749
  client credentials or refresh token grant, client secret by HTTP Basic).

:class:`TokenBroker` is shared by every poll thread: one cache entry and one lock per
account, so two polls of one account never ask the provider twice at once, and polls of
different accounts never wait for each other. A refresh token the provider rotates is
handed to ``on_rotated_refresh_token`` (the account store encrypts and stores it) before
the new access token is used, so a restart never falls back to a retired refresh token.

A refusal raises :class:`TokenRefused`, a :class:`StepFailed` of step ``token`` whose
server reply is the provider's ``error: error_description`` exactly as sent (AADSTS…
codes included).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from services.fetcher.account import Account, AccountProtocol, Authentication, OAuth2, OAuth2Provider
from services.fetcher.mail_source import StepFailed

MICROSOFT_LOGIN_HOST = "login.microsoftonline.com"

#: Exchange Online's scopes, by protocol and method (Microsoft's documented values).
_MICROSOFT_SCOPES: dict[tuple[AccountProtocol, Authentication], tuple[str, ...]] = {
    (AccountProtocol.IMAP, Authentication.OAUTH2_CLIENT_CREDENTIALS): ("https://outlook.office365.com/.default",),
    (AccountProtocol.POP3, Authentication.OAUTH2_CLIENT_CREDENTIALS): ("https://outlook.office365.com/.default",),
    (AccountProtocol.IMAP, Authentication.OAUTH2_REFRESH_TOKEN): ("https://outlook.office.com/IMAP.AccessAsUser.All",),
    (AccountProtocol.POP3, Authentication.OAUTH2_REFRESH_TOKEN): ("https://outlook.office.com/POP.AccessAsUser.All",),
    (AccountProtocol.GRAPH, Authentication.OAUTH2_CLIENT_CREDENTIALS): ("https://graph.microsoft.com/.default",),
    # .Shared: the delegate's token also opens the shared mailboxes the user has rights on (Graph's /users/{address}).
    (AccountProtocol.GRAPH, Authentication.OAUTH2_REFRESH_TOKEN): ("https://graph.microsoft.com/Mail.ReadWrite.Shared",),
}


def token_scopes(account: Account) -> tuple[str, ...]:
    """The scopes to ask for: the account's own, else Microsoft's for its protocol, else none
    (an ``oidc`` refresh keeps the scopes of the grant; client credentials get the client's default)."""
    oauth2 = _oauth2(account)
    if oauth2.scopes:
        return oauth2.scopes
    if oauth2.provider is OAuth2Provider.MICROSOFT:
        return _MICROSOFT_SCOPES.get((account.protocol, account.authentication), ())
    return ()


class TokenRefused(StepFailed):
    """The identity provider refused a token (or could not be asked); step ``token``.

    ``error_code`` is a short, bounded name for metrics: Microsoft's AADSTS code when the
    description has one, else the OAuth2 ``error`` (invalid_grant, invalid_client, ...),
    else ``unreachable`` (no answer) or ``not_configured``.
    """

    def __init__(self, server_reply: str | None, explanation: str | None = None, *, error_code: str = "unreachable") -> None:
        super().__init__("token", server_reply, explanation)
        self.error_code = error_code


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float
    """Wall-clock seconds (time.time) when the provider says it expires."""
    lifetime: float
    """Seconds it was valid for when issued."""


@dataclass(frozen=True)
class TokenGrant:
    """What the provider answered: the access token, and a rotated refresh token if any."""

    access_token: str
    expires_in: float
    refresh_token: str | None = None


_AADSTS = re.compile(r"\bAADSTS\d+\b")
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def refusal_code(answer: dict[str, Any]) -> str:
    """The bounded code of a provider's refusal (see :class:`TokenRefused`)."""
    found = _AADSTS.search(str(answer.get("error_description") or ""))
    if found:
        return found.group(0)
    error = str(answer.get("error") or "")
    return error if _ERROR_CODE.match(error) else "unrecognised"


def provider_error_text(answer: dict[str, Any]) -> str:
    """``error: error_description`` exactly as the provider sent them."""
    error, description = answer.get("error"), answer.get("error_description")
    return ": ".join(str(part) for part in (error, description) if part) or repr(answer)


def _oauth2(account: Account) -> OAuth2:
    if account.oauth2 is None or account.authentication not in (
        Authentication.OAUTH2_CLIENT_CREDENTIALS,
        Authentication.OAUTH2_REFRESH_TOKEN,
    ):
        raise TokenRefused(
            None, f"account {account.id!r} authenticates with {account.authentication.value}, not OAuth2.", error_code="not_configured"
        )
    return account.oauth2


def _verify(oauth2: OAuth2) -> str | bool:
    return str(oauth2.ca_file) if oauth2.ca_file else True


class TrustingSession(requests.Session):
    """A session that checks certificates against the account's ``ca_file`` on every request.

    A session's own ``verify`` loses to REQUESTS_CA_BUNDLE in requests, so it is passed
    with each request instead; msal takes this session as its ``http_client``.
    """

    def __init__(self, verify: str | bool) -> None:
        super().__init__()
        self._trust = verify

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._trust
        return super().request(method, url, *args, **kwargs)


# --- the two ways of asking ----------------------------------------------------------


class MicrosoftTokenClient:
    """msal's ConfidentialClientApplication for one account's application."""

    def __init__(self, oauth2: OAuth2, timeout: float) -> None:
        self._oauth2 = oauth2
        try:
            self._app = msal_application(oauth2, timeout)
        except ValueError as exc:
            # msal fetches the discovery document here and raises ValueError with its words.
            raise TokenRefused(None, f"msal could not use the authority {oauth2.issuer}: {exc}") from None
        except requests.RequestException as exc:
            raise TokenRefused(None, f"the authority {oauth2.issuer} could not be reached: {exc}") from None

    def client_credentials(self, scopes: Sequence[str]) -> TokenGrant:
        return self._grant(lambda: self._app.acquire_token_for_client(list(scopes)))

    def refresh(self, refresh_token: str, scopes: Sequence[str]) -> TokenGrant:
        return self._grant(lambda: self._app.acquire_token_by_refresh_token(refresh_token, list(scopes)))

    def _grant(self, ask: Callable[[], dict[str, Any]]) -> TokenGrant:
        try:
            answer = ask()
        except requests.RequestException as exc:
            raise TokenRefused(None, f"the token endpoint of {self._oauth2.issuer} could not be reached: {exc}") from None
        if "access_token" not in answer:
            raise TokenRefused(provider_error_text(answer), error_code=refusal_code(answer))
        return TokenGrant(answer["access_token"], float(answer.get("expires_in", 0)), answer.get("refresh_token"))


class OidcTokenClient:
    """A standard OAuth2 client of an OpenID Connect provider: discovery, then the token endpoint."""

    def __init__(self, oauth2: OAuth2, timeout: float) -> None:
        if oauth2.certificate_file is not None:
            raise TokenRefused(
                None, "certificate_file is supported for provider microsoft only; give oidc a client_secret.",
                error_code="not_configured",
            )
        self._oauth2 = oauth2
        self._timeout = timeout
        self._session = TrustingSession(_verify(oauth2))
        discovery = f"{oauth2.issuer.rstrip('/')}/.well-known/openid-configuration"
        try:
            response = self._session.get(discovery, timeout=timeout)
            response.raise_for_status()
            self._token_endpoint = response.json()["token_endpoint"]
        except (requests.RequestException, ValueError, KeyError) as exc:
            self._session.close()
            raise TokenRefused(None, f"the discovery document {discovery} could not be read: {exc}") from None

    def client_credentials(self, scopes: Sequence[str]) -> TokenGrant:
        return self._post({"grant_type": "client_credentials", **({"scope": " ".join(scopes)} if scopes else {})})

    def refresh(self, refresh_token: str, scopes: Sequence[str]) -> TokenGrant:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scopes:
            form["scope"] = " ".join(scopes)
        return self._post(form)

    def _post(self, form: dict[str, str]) -> TokenGrant:
        oauth2 = self._oauth2
        secret = oauth2.client_secret.get_secret_value() if oauth2.client_secret else None
        if secret is None:
            form = {**form, "client_id": oauth2.client_id}
        try:
            response = self._session.post(
                self._token_endpoint,
                data=form,
                auth=(oauth2.client_id, secret) if secret is not None else None,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            raise TokenRefused(None, f"the token endpoint {self._token_endpoint} could not be reached: {exc}") from None
        try:
            answer = response.json()
        except ValueError:
            raise TokenRefused(
                f"HTTP {response.status_code} {response.text[:500]}", "the token endpoint did not answer with JSON.",
                error_code=f"http_{response.status_code}",
            ) from None
        if response.status_code != 200 or "access_token" not in answer:
            raise TokenRefused(provider_error_text(answer), error_code=refusal_code(answer))
        return TokenGrant(answer["access_token"], float(answer.get("expires_in", 0)), answer.get("refresh_token"))


def is_entra_authority(issuer: str) -> bool:
    return issuer.startswith(f"https://{MICROSOFT_LOGIN_HOST}/")


def certificate_credential(path: Path) -> dict[str, str]:
    """msal's certificate credential: the PEM private key and certificate; msal signs its
    client assertion with them (PS256, the certificate's SHA-256 thumbprint as x5t#S256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        pem = path.read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
        key = serialization.load_pem_private_key(pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TokenRefused(
            None, f"certificate_file {path} must hold the certificate and its unencrypted private key (PEM): {exc}",
            error_code="not_configured",
        ) from None
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {
        "private_key": key_pem.decode(),
        "public_certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
    }


def msal_application(oauth2: OAuth2, timeout: float) -> Any:
    """msal's application for ``oauth2``: confidential with its certificate or secret, else public.

    Entra ID authorities are given to msal as ``authority``; any other issuer as
    ``oidc_authority`` (msal then reads its discovery document). Raises what msal raises
    (ValueError, requests' errors), and :class:`TokenRefused` for an unreadable certificate.
    """
    # Imported here: msal is needed only where Microsoft accounts are used.
    import msal

    where = {"authority": oauth2.issuer} if is_entra_authority(oauth2.issuer) else {"oidc_authority": oauth2.issuer}
    http = TrustingSession(_verify(oauth2))
    credential: Any
    if oauth2.certificate_file is not None:
        credential = certificate_credential(oauth2.certificate_file)
    elif oauth2.client_secret is not None:
        credential = oauth2.client_secret.get_secret_value()
    else:
        return msal.PublicClientApplication(oauth2.client_id, http_client=http, timeout=timeout, **where)
    return msal.ConfidentialClientApplication(
        oauth2.client_id, client_credential=credential, http_client=http, timeout=timeout, **where
    )


def token_client(oauth2: OAuth2, timeout: float) -> MicrosoftTokenClient | OidcTokenClient:
    if oauth2.provider is OAuth2Provider.MICROSOFT:
        return MicrosoftTokenClient(oauth2, timeout)
    return OidcTokenClient(oauth2, timeout)


# --- the cache -----------------------------------------------------------------------


def refresh_due(token: AccessToken, now: float, margin: float) -> bool:
    """True when ``token`` should be replaced: less than ``margin`` seconds left, where the
    margin is at most half the token's lifetime (a 4-second token is not always "due")."""
    return token.expires_at - now < min(margin, token.lifetime / 2)


@dataclass
class _Entry:
    lock: threading.Lock
    fingerprint: str = ""
    token: AccessToken | None = None
    client: MicrosoftTokenClient | OidcTokenClient | None = None
    refresh_token_seen: str | None = None
    """The refresh token the account carried when we last looked."""
    refresh_token_stored: str | None = None
    """The refresh token known to be in the account store (what a rotation replaces there)."""
    refresh_token_current: str | None = None
    """The newest refresh token: the account's, or one the provider rotated since."""


RotatedRefreshToken = Callable[[str, str, str], None]
"""``(account_id, previous, new)``: store the rotated refresh token of an account."""


class TokenBroker:
    """Access tokens per account, shared by all threads of one process."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        refresh_margin_seconds: float = 300.0,
        on_rotated_refresh_token: RotatedRefreshToken | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = timeout
        self._margin = refresh_margin_seconds
        self._on_rotated = on_rotated_refresh_token
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._entries_lock = threading.Lock()
        self.requests = 0
        """How many times a provider was asked (for tests and the metric)."""

    def _entry(self, account_id: str) -> _Entry:
        with self._entries_lock:
            entry = self._entries.get(account_id)
            if entry is None:
                entry = self._entries[account_id] = _Entry(threading.Lock())
            return entry

    def access_token(self, account: Account, scopes: Sequence[str] | None = None) -> str:
        """A valid access token for ``account``: the cached one, or a new one when it is due.

        Raises :class:`TokenRefused` with the provider's exact error text.
        """
        oauth2 = _oauth2(account)
        wanted = tuple(scopes) if scopes is not None else token_scopes(account)
        entry = self._entry(account.id)
        with entry.lock:
            fingerprint = _fingerprint(account, wanted)
            if fingerprint != entry.fingerprint:
                # Another application, secret, authority or scope: nothing cached applies.
                entry.fingerprint, entry.token, entry.client = fingerprint, None, None
            stored_refresh = oauth2.refresh_token.get_secret_value() if oauth2.refresh_token else None
            if stored_refresh != entry.refresh_token_seen:
                # A new consent (or the first look): the account's refresh token wins.
                entry.refresh_token_seen = entry.refresh_token_stored = entry.refresh_token_current = stored_refresh
            now = self._clock()
            if entry.token is not None and not refresh_due(entry.token, now, self._margin):
                return entry.token.value
            if entry.client is None:
                entry.client = token_client(oauth2, self._timeout)
            self.requests += 1
            if account.authentication is Authentication.OAUTH2_CLIENT_CREDENTIALS:
                grant = entry.client.client_credentials(wanted)
            else:
                if entry.refresh_token_current is None:
                    raise TokenRefused(
                        None, "oauth2_refresh_token needs oauth2.refresh_token (run the consent flow).", error_code="not_configured"
                    )
                grant = entry.client.refresh(entry.refresh_token_current, wanted)
                if grant.refresh_token and grant.refresh_token != entry.refresh_token_current:
                    # Kept first: the provider may already have retired the old one.
                    entry.refresh_token_current = grant.refresh_token
                    if self._on_rotated is not None:
                        self._store_rotated(account.id, entry, grant.refresh_token)
            lifetime = grant.expires_in if grant.expires_in > 0 else 3600.0
            entry.token = AccessToken(grant.access_token, now + lifetime, lifetime)
            return entry.token.value

    def _store_rotated(self, account_id: str, entry: _Entry, new: str) -> None:
        """Store a rotated refresh token before its access token is used; a failure fails
        the poll (step token), and the next rotation tries again from the stored one."""
        assert self._on_rotated is not None
        try:
            self._on_rotated(account_id, entry.refresh_token_stored or "", new)
        except Exception as exc:  # noqa: BLE001 - any failure to store must stop the poll, loudly
            entry.token = None
            raise TokenRefused(
                None,
                f"the identity provider rotated the refresh token, and storing the new one failed "
                f"({type(exc).__name__}: {exc}); it is kept in memory and stored at the next rotation.",
                error_code="not_stored",
            ) from exc
        entry.refresh_token_stored = new

    def forget(self, account_id: str) -> None:
        """Drop the cached access token (after the server refused it), keeping the refresh token."""
        entry = self._entry(account_id)
        with entry.lock:
            entry.token = None


def _fingerprint(account: Account, scopes: tuple[str, ...]) -> str:
    oauth2 = _oauth2(account)
    parts = [
        account.authentication.value, oauth2.provider.value, oauth2.issuer, oauth2.client_id,
        oauth2.client_secret.get_secret_value() if oauth2.client_secret else "",
        str(oauth2.certificate_file or ""), str(oauth2.ca_file or ""), " ".join(scopes),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
