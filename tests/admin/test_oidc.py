"""OIDC bearer tokens on the admin API, verified against a JWKS served on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from mailintake.database import engine_for
from mailintake.runtime.settings import InvalidSettings, load_settings
from services.admin.access import AuditLog
from services.admin.app import create_app
from services.admin.settings import AdminSettings

pytestmark = pytest.mark.stack

ISSUER = "https://login.example.test/realm"
AUDIENCE = "mailintake-admin"


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signing_key():
    return new_key()


@pytest.fixture(scope="module")
def jwks_url(signing_key):
    """The identity provider's JWKS (one RSA key, kid 'k1') served over HTTP on loopback."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key())) | {"kid": "k1", "use": "sig"}
    body = json.dumps({"keys": [jwk]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


def token(key, *, kid="k1", algorithm="RS256", **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300} | claims
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=algorithm, headers={"kid": kid})


def hmac_token(secret: bytes) -> str:
    """An HS256 token made by hand (PyJWT refuses to), "signed" with ``secret``."""
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing_input = part({"alg": "HS256", "typ": "JWT", "kid": "k1"}) + "." + part(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 300}
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


@pytest.fixture
def oidc_client(stack, jwks_url):
    settings = AdminSettings(
        database_url=stack.database_url, oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_url=jwks_url
    )
    with TestClient(create_app(settings)) as client:
        yield client


def status_with(client, bearer: str) -> tuple[int, str]:
    response = client.get("/api/accounts", headers={"Authorization": f"Bearer {bearer}"})
    return response.status_code, response.text


def test_a_valid_token_of_the_provider_is_accepted_and_audited_by_subject(
    stack, oidc_client, signing_key, account_document, unique
):
    bearer = token(signing_key, sub=f"alice-{unique}")
    assert status_with(oidc_client, bearer)[0] == 200
    document = account_document(stack.user("demo"))
    created = oidc_client.post("/api/accounts", json=document, headers={"Authorization": f"Bearer {bearer}"})
    assert created.status_code == 201, created.text
    [entry] = AuditLog(engine_for(stack.database_url)).entries(document["id"])
    assert (entry.actor, entry.action) == (f"oidc:alice-{unique}", "account.create")


def test_admin_tokens_still_work_beside_oidc(oidc_client, admin_token):
    assert status_with(oidc_client, admin_token)[0] == 200


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("wrong audience", "Audience"),
        ("wrong issuer", "issuer"),
        ("expired", "expired"),
        ("no subject", "sub"),
        ("no expiry", "exp"),
        ("another key", "Signature verification failed"),
        ("unknown kid", "Unable to find a signing key"),
        ("hmac with the public key", "alg"),
        ("unsigned", "alg"),
    ],
)
def test_a_bad_token_is_refused_saying_why(oidc_client, signing_key, case, why):
    public_pem = signing_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    bearer = {
        "wrong audience": lambda: token(signing_key, aud="someone-else"),
        "wrong issuer": lambda: token(signing_key, iss="https://evil.example.test"),
        "expired": lambda: token(signing_key, exp=int(time.time()) - 60),
        "no subject": lambda: token(signing_key, sub=None),
        "no expiry": lambda: token(signing_key, exp=None),
        "another key": lambda: token(new_key()),
        "unknown kid": lambda: token(signing_key, kid="k-unknown"),
        # The classic confusion: an HMAC "signed" with the public key, which everybody has.
        "hmac with the public key": lambda: hmac_token(public_pem),
        "unsigned": lambda: token(None, algorithm="none"),
    }[case]()
    status, text = status_with(oidc_client, bearer)
    assert status == 401, text
    detail = json.loads(text)["detail"]
    assert detail.startswith("the OIDC token is not accepted") and why.lower() in detail.lower(), detail


def test_without_oidc_settings_a_provider_token_is_just_an_unknown_token(anonymous, signing_key):
    status, text = status_with(anonymous, token(signing_key))
    assert status == 401 and "unknown or revoked" in text


def test_oidc_settings_go_together(monkeypatch):
    monkeypatch.setenv("MAILINTAKE_ADMIN_OIDC_ISSUER", ISSUER)
    with pytest.raises(InvalidSettings, match=r"MAILINTAKE_ADMIN_OIDC_JWKS_URL \(AdminSettings.oidc_jwks_url\).*set all three or none"):
        load_settings(AdminSettings)
