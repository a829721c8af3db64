"""A person's sign-in and consent at the stack's OpenID Connect provider, scripted.

The provider runs oidc-provider's development interactions: a login form that takes a
mailbox name (the password is ignored) and a consent form. This walks the
authorization-code flow with PKCE through both forms, as a browser would, and redeems
the code at the token endpoint: the refresh token an admin's "Connect" would store.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from mailintake.stack import Endpoints

CALLBACK = "http://127.0.0.1:8080/accounts/oauth/callback"
_FORM_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


@dataclass(frozen=True)
class Consent:
    access_token: str
    refresh_token: str
    expires_in: int
    scope: str


def _session(ca_file) -> requests.Session:
    session = requests.Session()
    # A session's verify loses to REQUESTS_CA_BUNDLE; pass it with each request.
    original = session.request
    session.request = lambda method, url, **kw: original(method, url, **{**kw, "verify": str(ca_file)})  # type: ignore[method-assign]
    return session


def sign_in_and_consent(
    endpoints: Endpoints,
    mailbox: str,
    *,
    client_id: str = "mailintake-delegated",
    scope: str = "openid offline_access email profile mail",
) -> Consent:
    """Sign in as ``mailbox``, consent, and redeem the code; the tokens the provider issued."""
    client = endpoints.oidc_client(client_id)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    browser = _session(endpoints.ca_file)
    response = browser.get(
        f"{endpoints.oidc_issuer}/auth",
        params={
            "client_id": client_id, "response_type": "code", "redirect_uri": CALLBACK, "scope": scope,
            "code_challenge": challenge, "code_challenge_method": "S256", "state": state, "prompt": "consent",
        },
        allow_redirects=False,
        timeout=10,
    )
    for form in ({"prompt": "login", "login": mailbox, "password": "ignored"}, {"prompt": "consent"}, None):
        while response.is_redirect:
            location = urljoin(response.url, response.headers["location"])
            if location.startswith(CALLBACK):
                break
            response = browser.get(location, allow_redirects=False, timeout=10)
        if form is None or (response.is_redirect and urljoin(response.url, response.headers["location"]).startswith(CALLBACK)):
            break
        match = _FORM_ACTION.search(response.text)
        assert match, f"no form on {response.url}: {response.status_code} {response.text[:300]}"
        response = browser.post(urljoin(response.url, html.unescape(match.group(1))), data=form, allow_redirects=False, timeout=10)
    callback = urljoin(response.url, response.headers["location"])
    query = parse_qs(urlsplit(callback).query)
    assert query.get("state") == [state], f"unexpected callback {callback}"
    assert "code" in query, f"the provider refused: {callback}"
    token = browser.post(
        f"{endpoints.oidc_issuer}/token",
        data={"grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": CALLBACK, "code_verifier": verifier},
        auth=(client.client_id, client.client_secret),
        timeout=10,
    )
    answer = token.json()
    assert token.status_code == 200, answer
    return Consent(answer["access_token"], answer["refresh_token"], answer["expires_in"], answer.get("scope", ""))
