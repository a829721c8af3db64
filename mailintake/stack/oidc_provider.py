"""An OpenID Connect provider (node-oidc-provider on Node.js) serving HTTPS on loopback.

It issues the OAuth2 tokens the stack's Dovecot accepts for XOAUTH2 and OAUTHBEARER
(Dovecot introspects them at the provider), so the OAuth2 paths of the services run
against a real authorization server: client credentials, authorization code with PKCE,
refresh tokens (rotated on every use), introspection and revocation.

The npm package is installed from the lock file in deploy/local/oidc-provider by
``npm ci`` on the first start (and again when the lock file changes). The registered
clients are fixed here (``OIDC_CLIENTS``) so that tests and the admin app's consent
flow know them; ``mailintake stack up`` prints them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .component import Component, ProbeFailed
from .layout import DEPLOY_DIR
from .mail_users import DEMO_USERS
from .os_accounts import Accounts
from .preflight import MissingTool, _search_path
from .settings import HOST, MAIL_DOMAIN, StackSettings
from .tls_probe import client_context

PROVIDER_DIR = DEPLOY_DIR / "oidc-provider"
SERVER_SCRIPT = PROVIDER_DIR / "server.mjs"
LOCK_FILE = PROVIDER_DIR / "package-lock.json"
_LOCK_STAMP = "node_modules/.mailintake-lock-sha256"

#: oidc-provider 9 is ESM-only and needs ``require(esm)``-era Node.js.
NODE_MIN_VERSION = (20, 19)

#: The redirect the admin app's "Connect" flow returns to. The delegated client is a
#: native (RFC 8252) client, so any port of a loopback address matches this URI.
ADMIN_CALLBACK_PATH = "/accounts/oauth/callback"


@dataclass(frozen=True)
class OidcClient:
    """A client registered at the stack's provider."""

    client_id: str
    client_secret: str
    purpose: str
    grant_types: tuple[str, ...]
    scope: str = ""
    redirect_uris: tuple[str, ...] = ()
    access_token_ttl: int | None = None
    """Seconds; None means the provider's default (``MAILINTAKE_STACK_OIDC_ACCESS_TOKEN_TTL``)."""
    extra: dict[str, object] = field(default_factory=dict)

    def registration(self) -> dict[str, object]:
        """The client's metadata as oidc-provider takes it (RFC 7591 names)."""
        uses_redirect = "authorization_code" in self.grant_types
        metadata: dict[str, object] = {
            "client_id": self.client_id,
            "grant_types": list(self.grant_types),
            "response_types": ["code"] if uses_redirect else [],
            "redirect_uris": list(self.redirect_uris),
            "token_endpoint_auth_method": "client_secret_basic",
            **self.extra,
        }
        if self.client_secret:
            metadata["client_secret"] = self.client_secret
        if self.scope:
            metadata["scope"] = self.scope
        return metadata


#: Mailboxes an app-only (client credentials) token may be asked for; bob is left out
#: on purpose so that a refusal can be tested.
APP_MAILBOXES = tuple(user.address for user in DEMO_USERS if user.name != "bob")

_DELEGATED_SCOPE = "openid offline_access email profile mail"
_CALLBACKS = (f"http://127.0.0.1:8080{ADMIN_CALLBACK_PATH}", f"http://localhost:8080{ADMIN_CALLBACK_PATH}")

#: Seconds an access token of ``mailintake-short-lived`` lives.
SHORT_ACCESS_TOKEN_TTL = 4

OIDC_CLIENTS: tuple[OidcClient, ...] = (
    OidcClient(
        "mailintake-app", "mailintake-app-secret",
        "app-only (client credentials); scope mailbox:ADDRESS for one of: " + ", ".join(APP_MAILBOXES),
        grant_types=("client_credentials",),
        scope=" ".join(f"mailbox:{address}" for address in APP_MAILBOXES),
    ),
    OidcClient(
        "mailintake-delegated", "mailintake-delegated-secret",
        f"delegated (authorization code + PKCE, prompt=consent, scope {_DELEGATED_SCOPE!r}); "
        f"redirect http://127.0.0.1:ANY-PORT{ADMIN_CALLBACK_PATH}",
        grant_types=("authorization_code", "refresh_token"),
        scope=_DELEGATED_SCOPE,
        redirect_uris=_CALLBACKS,
        extra={"application_type": "native"},
    ),
    OidcClient(
        "mailintake-short-lived", "mailintake-short-lived-secret",
        f"both of the above, but access tokens live {SHORT_ACCESS_TOKEN_TTL} s (for expiry tests)",
        grant_types=("client_credentials", "authorization_code", "refresh_token"),
        scope=" ".join([_DELEGATED_SCOPE, *(f"mailbox:{address}" for address in APP_MAILBOXES)]),
        redirect_uris=_CALLBACKS,
        access_token_ttl=SHORT_ACCESS_TOKEN_TTL,
        extra={"application_type": "native"},
    ),
    OidcClient(
        "mailintake-app-certificate", "",
        "app-only like mailintake-app, authenticated by a certificate (private_key_jwt): "
        "the PEM with key and certificate is oidc/app-certificate.pem in the stack's state directory",
        grant_types=("client_credentials",),
        scope=" ".join(f"mailbox:{address}" for address in APP_MAILBOXES),
        extra={"token_endpoint_auth_method": "private_key_jwt"},
    ),
    OidcClient(
        "dovecot", "dovecot-introspection-secret",
        "Dovecot's oauth2 passdb: token introspection only",
        grant_types=(),
    ),
)


#: The issuer's path. msal takes an OpenID Connect authority only with a path (a
#: "tenant" segment), as Microsoft's own authorities have.
ISSUER_PATH = "/mailintake"


def oidc_issuer(settings: StackSettings) -> str:
    """The provider's issuer URL (its discovery document is below it)."""
    return f"https://{HOST}:{settings.oidc_port}{ISSUER_PATH}"


def oidc_client(client_id: str) -> OidcClient:
    for client in OIDC_CLIENTS:
        if client.client_id == client_id:
            return client
    raise KeyError(client_id)


def find_node(path: str | None = None) -> tuple[Path, Path] | MissingTool:
    """``node`` (new enough for oidc-provider 9) and ``npm`` on PATH."""
    node = shutil.which("node", path=_search_path(path))
    npm = shutil.which("npm", path=_search_path(path))
    if not node or not npm:
        return MissingTool("oidc", "Node.js and npm not found on PATH: install Node.js 20.19 or newer")
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return MissingTool("oidc", f"{node} --version failed: {exc}")
    match = re.match(r"v(\d+)\.(\d+)", out.strip())
    if not match or (int(match.group(1)), int(match.group(2))) < NODE_MIN_VERSION:
        wanted = ".".join(map(str, NODE_MIN_VERSION))
        return MissingTool("oidc", f"{node} is {out.strip() or 'of unknown version'}; oidc-provider 9 needs Node.js {wanted} or newer")
    return Path(node), Path(npm)


class OidcProvider(Component):
    name = "oidc"
    stop_timeout = 10.0

    node: Path | None = None
    npm: Path | None = None

    def port_settings(self) -> dict[str, int]:
        return {"oidc_port": self.settings.oidc_port}

    @property
    def issuer(self) -> str:
        return oidc_issuer(self.settings)

    def address(self) -> str:
        return f"{self.issuer} (OpenID Connect, HTTPS)"

    @property
    def config_file(self) -> Path:
        return self.layout.oidc_dir / "config.json"

    def owns(self, argv: list[str]) -> bool:
        return str(SERVER_SCRIPT) in argv and str(self.config_file) in argv

    def find_tools(self, path: str | None = None) -> list[MissingTool]:
        found = find_node(path)
        if isinstance(found, MissingTool):
            return [found]
        self.node, self.npm = found
        return []

    # --- one-time setup ---------------------------------------------------
    def _lock_digest(self) -> str:
        return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()

    def _modules_current(self) -> bool:
        try:
            return (PROVIDER_DIR / _LOCK_STAMP).read_text().strip() == self._lock_digest()
        except OSError:
            return False

    def _install_modules(self) -> None:
        """``npm ci`` from the lock file into deploy/local/oidc-provider/node_modules."""
        with self.log_file.open("ab") as log:
            log.write(b"\n=== mailintake stack: npm ci for oidc-provider\n")
            log.flush()
            result = subprocess.run(
                [str(self.npm), "ci", "--no-audit", "--no-fund", "--omit=dev"],
                cwd=PROVIDER_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        if result.returncode != 0:
            raise self.failure(f"could not install its npm packages (npm ci exit code {result.returncode})")
        (PROVIDER_DIR / _LOCK_STAMP).write_text(self._lock_digest())

    def provider_config(self) -> dict[str, object]:
        s, layout = self.settings, self.layout
        return {
            "issuer": self.issuer,
            "host": HOST,
            "port": s.oidc_port,
            "server_cert": str(layout.server_cert),
            "server_key": str(layout.server_key),
            "secrets_file": str(layout.oidc_dir / "keys.json"),
            "mail_domain": MAIL_DOMAIN,
            "mailboxes": [user.address for user in DEMO_USERS],
            "clients": [self._registration(client) for client in OIDC_CLIENTS],
            "access_token_ttl": s.oidc_access_token_ttl,
            "access_token_ttl_by_client": {
                c.client_id: c.access_token_ttl for c in OIDC_CLIENTS if c.access_token_ttl is not None
            },
            "refresh_token_ttl": s.oidc_refresh_token_ttl,
        }

    def _registration(self, client: OidcClient) -> dict[str, object]:
        registration = client.registration()
        if registration["token_endpoint_auth_method"] == "private_key_jwt":
            registration["jwks"] = {"keys": [_public_jwk(self.layout.oidc_app_certificate)]}
        return registration

    def prepare(self, accounts: Accounts) -> None:
        self.layout.oidc_dir.mkdir(parents=True, exist_ok=True)
        ensure_app_certificate(self.layout.oidc_app_certificate)
        if not self._modules_current():
            self._install_modules()
        tmp = self.config_file.with_name("config.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.provider_config(), handle, indent=2)
        tmp.replace(self.config_file)

    def command(self) -> list[str]:
        return [str(self.node), str(SERVER_SCRIPT), str(self.config_file)]

    # --- health -------------------------------------------------------------
    def probe(self, timeout: float) -> None:
        """The discovery document over verified HTTPS, naming this issuer."""
        url = f"{self.issuer}/.well-known/openid-configuration"
        context: ssl.SSLContext = client_context(self.layout.ca_cert)
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
                document = json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ProbeFailed(f"{url}: {exc}") from None
        if document.get("issuer") != self.issuer:
            raise ProbeFailed(f"{url}: issuer is {document.get('issuer')!r}, expected {self.issuer!r}")


def ensure_app_certificate(path: Path) -> None:
    """A self-signed certificate with its private key (one PEM file), made once: what an
    application registered with a certificate holds, for ``mailintake-app-certificate``."""
    if path.exists():
        return
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailintake-app-certificate")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pem += certificate.public_bytes(serialization.Encoding.PEM)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    tmp.replace(path)


def _public_jwk(path: Path) -> dict[str, str]:
    """The RSA public key of the application certificate as a JWK (RFC 7517)."""
    import base64

    from cryptography import x509

    numbers = x509.load_pem_x509_certificate(path.read_bytes()).public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return {"kty": "RSA", "n": b64(numbers.n), "e": b64(numbers.e), "use": "sig"}
