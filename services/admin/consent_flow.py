"""The "Connect with Microsoft" consent flow: OAuth2 authorization code with PKCE (S256),
``state`` and ``nonce``, which gives an ``oauth2_refresh_token`` account its refresh token.

:func:`begin` asks the identity provider's discovery document for its endpoints and
returns where to send the admin's browser, with the flow's secrets (PKCE verifier,
state, nonce) that the caller keeps on the server (``pending_consents``). The browser
comes back to ``PUBLIC_URL/accounts/oauth/callback``; :func:`complete` checks the
answer against the kept flow and exchanges the code for the tokens.

Microsoft accounts go through msal (``initiate_auth_code_flow`` and
``acquire_token_by_auth_code_flow``); an authority that is not Microsoft's login host is
handed to msal as a generic OpenID Connect authority (``oidc_authority``), which is how
the tests point it at the stack's provider. Provider ``oidc`` goes through authlib, with
the ID token's signature and nonce verified against the issuer's keys.

The provider's own words (``error``, ``error_description``: AADSTS... codes included)
reach the admin exactly as sent, in :class:`ProviderRefused`. No token is ever logged.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import msal
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError
from pydantic import SecretStr

from services.fetcher.account import Account, AccountProtocol, Authentication, OAuth2, OAuth2Provider
# The token layer's way of reaching a provider (CA file on every request, msal's certificate
# credential), so the consent and the later refreshes trust and authenticate alike.
from services.fetcher.oauth_tokens import TokenRefused, TrustingSession, msal_application, token_scopes
from services.sender.smtp_scopes import MICROSOFT_SMTP_SCOPES

CALLBACK_PATH = "/accounts/oauth/callback"

#: Scopes msal adds by itself, and refuses to be given: it always asks for an ID token and a refresh token.
_MSAL_RESERVED = frozenset({"openid", "profile", "offline_access"})


class ConsentFailed(Exception):
    """The flow cannot start or finish; the message says why, for the admin."""


class ProviderRefused(ConsentFailed):
    """The identity provider answered with an error: its ``error`` and ``error_description`` exactly as sent."""

    def __init__(self, error: str, description: str | None) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class PendingConsent:
    """A started flow: where the browser goes, and what the server keeps until it comes back."""

    state: str
    authorize_url: str
    flow: dict[str, Any]
    """The flow's secrets (PKCE verifier, nonce, redirect URI): kept on the server, never sent to the browser."""


@dataclass(frozen=True)
class Consented:
    refresh_token: SecretStr
    signed_in_as: str | None
    """Who consented, from the ID token (preferred_username, email or sub), for the admin to see."""


def redirect_uri(public_url: str) -> str:
    """The callback the provider sends the browser back to: from the admin's configured address, never a Host header."""
    return public_url.rstrip("/") + CALLBACK_PATH


def consent_scopes(account: Account) -> list[str]:
    """The scopes to consent to: those the token layer later asks for (``token_scopes``),
    since a refresh token is redeemed only for scopes consented to here."""
    oauth2 = _oauth2(account)
    scopes = list(token_scopes(account))
    if oauth2.provider is OAuth2Provider.MICROSOFT and not oauth2.scopes and account.protocol is not AccountProtocol.GRAPH:
        # The sender logs in to SMTP with a token of the same refresh token (auto-answers).
        scopes += MICROSOFT_SMTP_SCOPES[Authentication.OAUTH2_REFRESH_TOKEN]
    if oauth2.provider is OAuth2Provider.MICROSOFT:
        return [scope for scope in scopes if scope not in _MSAL_RESERVED]
    # A standard client must ask for the ID token and the refresh token itself.
    return list(dict.fromkeys(["openid", "offline_access", *scopes]))


def begin(account: Account, public_url: str, timeout: float = 15.0) -> PendingConsent:
    """Start the flow for ``account`` (its client secret, if any, already filled in)."""
    if account.authentication is not Authentication.OAUTH2_REFRESH_TOKEN:
        raise ConsentFailed(f"only oauth2_refresh_token accounts connect (this one uses {account.authentication.value})")
    oauth2 = _oauth2(account)
    state = secrets.token_urlsafe(32)
    callback = redirect_uri(public_url)
    try:
        if oauth2.provider is OAuth2Provider.MICROSOFT:
            flow = _msal_app(oauth2, timeout).initiate_auth_code_flow(
                consent_scopes(account), redirect_uri=callback, state=state, prompt="consent"
            )
            return PendingConsent(state, flow["auth_uri"], flow)
        metadata = _discovery(oauth2, timeout)
        nonce, verifier = generate_token(43), generate_token(64)
        session = _oidc_session(oauth2, callback, consent_scopes(account), timeout)
        url, _ = session.create_authorization_url(
            metadata["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier, prompt="consent"
        )
        flow = {"state": state, "nonce": nonce, "code_verifier": verifier, "redirect_uri": callback, "metadata": metadata}
        return PendingConsent(state, url, flow)
    except (requests.RequestException, ValueError, KeyError) as exc:
        raise ConsentFailed(f"the identity provider at {oauth2.issuer} cannot be asked: {exc}") from None


def complete(account: Account, pending: Mapping[str, Any], answer: Mapping[str, str], timeout: float = 15.0) -> Consented:
    """Finish the flow with the provider's ``answer`` (the callback's query parameters)."""
    if "error" in answer:
        # The provider's refusal (a denied consent, AADSTS...) as sent; nothing else to check.
        raise ProviderRefused(answer["error"], answer.get("error_description"))
    if not secrets.compare_digest(str(answer.get("state", "")), str(pending.get("state", ""))):
        raise ConsentFailed("the answer's state is not this flow's")
    if "code" not in answer:
        raise ConsentFailed("the identity provider's answer has neither a code nor an error")
    oauth2 = _oauth2(account)
    try:
        if oauth2.provider is OAuth2Provider.MICROSOFT:
            result = _msal_app(oauth2, timeout).acquire_token_by_auth_code_flow(dict(pending), dict(answer))
            if "error" in result:
                raise ProviderRefused(result["error"], result.get("error_description"))
            claims = result.get("id_token_claims") or {}
        else:
            result, claims = _oidc_exchange(account, oauth2, pending, answer, timeout)
    except requests.RequestException as exc:
        raise ConsentFailed(f"the identity provider at {oauth2.issuer} cannot be asked: {exc}") from None
    except ValueError as exc:
        # msal's own checks of the answer against the flow (state, nonce).
        raise ConsentFailed(f"the identity provider's answer does not fit this flow: {exc}") from None
    refresh_token = result.get("refresh_token")
    if not refresh_token:
        raise ConsentFailed(
            "the identity provider gave no refresh token: the application must be allowed offline access "
            "(scope offline_access) and the grant must include it"
        )
    who = claims.get("preferred_username") or claims.get("email") or claims.get("sub")
    return Consented(SecretStr(refresh_token), None if who is None else str(who))


# --- the identity providers ---------------------------------------------------


def _oauth2(account: Account) -> OAuth2:
    if account.oauth2 is None:
        raise ConsentFailed(f"account {account.id!r} has no oauth2 section")
    return account.oauth2


def _http(oauth2: OAuth2) -> requests.Session:
    return TrustingSession(str(oauth2.ca_file) if oauth2.ca_file else True)


def _msal_app(oauth2: OAuth2, timeout: float) -> msal.ClientApplication:
    try:
        return msal_application(oauth2, timeout)
    except TokenRefused as exc:
        raise ConsentFailed(exc.explanation or str(exc)) from None


def _discovery(oauth2: OAuth2, timeout: float) -> dict[str, Any]:
    url = oauth2.issuer.rstrip("/") + "/.well-known/openid-configuration"
    response = _http(oauth2).get(url, timeout=timeout)
    response.raise_for_status()
    metadata = response.json()
    if metadata.get("issuer") != oauth2.issuer:
        raise ConsentFailed(f"{url} names the issuer {metadata.get('issuer')!r}, not {oauth2.issuer!r}")
    return metadata


def _oidc_session(oauth2: OAuth2, callback: str, scopes: list[str], timeout: float) -> OAuth2Session:
    session = OAuth2Session(
        oauth2.client_id,
        oauth2.client_secret.get_secret_value() if oauth2.client_secret else None,
        scope=" ".join(scopes),
        redirect_uri=callback,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if oauth2.client_secret else "none",
    )
    # A session's own verify loses to REQUESTS_CA_BUNDLE (see TrustingSession): pass it per request.
    session.trust_env = False
    trust = str(oauth2.ca_file) if oauth2.ca_file else True
    request = session.request
    session.request = lambda method, url, **kw: request(method, url, **{"timeout": timeout, **kw, "verify": trust})  # type: ignore[method-assign]
    return session


def _oidc_exchange(
    account: Account, oauth2: OAuth2, pending: Mapping[str, Any], answer: Mapping[str, str], timeout: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    metadata = pending["metadata"]
    session = _oidc_session(oauth2, pending["redirect_uri"], consent_scopes(account), timeout)
    try:
        token = session.fetch_token(
            metadata["token_endpoint"], code=answer["code"], code_verifier=pending["code_verifier"], grant_type="authorization_code"
        )
    except OAuthError as exc:
        raise ProviderRefused(exc.error, exc.description) from None
    claims: dict[str, Any] = {}
    if "id_token" in token:
        try:
            keys = jwt.PyJWKClient(metadata["jwks_uri"], timeout=int(timeout), ssl_context=_ssl_context(oauth2))
            claims = jwt.decode(
                token["id_token"],
                keys.get_signing_key_from_jwt(token["id_token"]),
                algorithms=["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"],
                audience=oauth2.client_id,
                issuer=oauth2.issuer,
            )
        except jwt.PyJWTError as exc:
            raise ConsentFailed(f"the ID token is not accepted: {exc}") from None
        if not secrets.compare_digest(str(claims.get("nonce", "")), str(pending["nonce"])):
            raise ConsentFailed("the ID token's nonce is not this flow's")
    return dict(token), claims


def _ssl_context(oauth2: OAuth2):
    import ssl

    return ssl.create_default_context(cafile=str(oauth2.ca_file) if oauth2.ca_file else None)
