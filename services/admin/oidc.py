"""OIDC bearer tokens for the admin API, when configured: a JWT access token from the
organisation's identity provider, verified against the provider's JWKS.

A token is accepted only when its signature verifies with a key of the JWKS (by
``kid``), under an asymmetric algorithm we allow (never ``none`` or an HMAC, whose
"key" would be public), and its ``iss``, ``aud`` and ``exp`` are present and right.
The actor is ``oidc:`` and the configured claim (``sub`` by default). The JWKS is
fetched on the first token and cached for five minutes; a ``kid`` it lacks makes it
fetched again, so a key rotation at the provider needs no restart.
"""

from __future__ import annotations

import jwt

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class OidcRefused(Exception):
    """The token is not accepted; the message says why, without repeating the token."""


class OidcVerifier:
    def __init__(self, issuer: str, audience: str, jwks_url: str, actor_claim: str = "sub", timeout: float = 10.0) -> None:
        self._issuer = issuer
        self._audience = audience
        self._actor_claim = actor_claim
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=int(max(1, timeout)))

    def actor(self, token: str) -> str:
        """``oidc:<claim>`` of a valid token, else :class:`OidcRefused`."""
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iss", "aud", self._actor_claim]},
            )
        except jwt.PyJWKClientConnectionError as exc:
            raise OidcRefused(f"the identity provider's keys cannot be fetched: {exc}") from None
        except jwt.PyJWTError as exc:
            raise OidcRefused(f"the OIDC token is not accepted: {exc}") from None
        return f"oidc:{claims[self._actor_claim]}"
