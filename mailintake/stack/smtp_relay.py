"""The stack's SMTP submission server (run as ``python -m mailintake.stack.smtp_relay``).

STARTTLS is required before anything else, AUTH (PLAIN or LOGIN) only after
TLS, and credentials are the mailbox users of the Dovecot passwd-file. With
``--oauth2-introspection FILE`` it also takes SASL XOAUTH2 and OAUTHBEARER: the
bearer token is introspected at the stack's OpenID Connect provider (RFC 7662), as
Dovecot does, and must be active and name the mailbox in its ``username``. Every
accepted message is handed to ``dovecot-lda`` for each recipient, so it
lands in that user's Maildir and can be read back over IMAP or POP3.
Recipients outside the stack's mail domain, or unknown there, get 550.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import signal
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .mail_users import check_credentials, local_part, read_users
from .settings import HOST, MAIL_DOMAIN

log = logging.getLogger("mailintake.stack.smtp_relay")


#: What the relay answers to a bearer token it does not take (after the client's empty
#: answer to the error challenge, as RFC 7628 and Google's XOAUTH2 have it).
TOKEN_REFUSED = "535 5.7.8 Authentication credentials invalid: the bearer token is not active (expired or revoked)"
TOKEN_OF_ANOTHER = "535 5.7.8 Authentication credentials invalid: the bearer token is not for this mailbox"
INTROSPECTION_FAILED = "454 4.7.0 Temporary authentication failure: the token could not be introspected"


@dataclass(frozen=True)
class Introspection:
    """Where and as which client the relay asks the provider about a token."""

    url: str
    client_id: str
    client_secret: str
    ca_file: Path

    @classmethod
    def read(cls, path: Path) -> Introspection:
        document = json.loads(path.read_text(encoding="utf-8"))
        return cls(document["url"], document["client_id"], document["client_secret"], Path(document["ca_file"]))

    def claims(self, token: str) -> dict:
        """The provider's answer about ``token`` (``active`` and its claims)."""
        request = urllib.request.Request(
            self.url,
            data=urllib.parse.urlencode({"token": token}).encode(),
            headers={
                "Authorization": "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode(),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return json.load(response)


def parse_bearer(mechanism: str, blob: bytes) -> tuple[str, str] | None:
    """(user, token) of an XOAUTH2 or OAUTHBEARER initial response, or None if it is not one."""
    text = blob.decode("utf-8", errors="replace")
    if mechanism == "XOAUTH2":
        # user=USER ^A auth=Bearer TOKEN ^A ^A
        fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
        user = fields.get("user")
    else:
        # RFC 7628: gs2 header "n,a=USER," ^A auth=Bearer TOKEN ^A ^A
        header, _, rest = text.partition("\x01")
        user = next((part[2:] for part in header.split(",") if part.startswith("a=")), None)
        fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
    scheme, _, token = fields.get("auth", "").partition(" ")
    if not user or scheme.lower() != "bearer" or not token:
        return None
    return user, token


class BearerTokens:
    """aiosmtpd handler mixin: AUTH XOAUTH2 and OAUTHBEARER, the token introspected at the provider."""

    introspection: Introspection | None = None

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 - aiosmtpd's naming
        return await self._bearer(server, "XOAUTH2", args)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 - aiosmtpd's naming
        return await self._bearer(server, "OAUTHBEARER", args)

    async def _bearer(self, server: SMTP, mechanism: str, args: list[str]) -> AuthResult:
        if self.introspection is None:
            return AuthResult(success=False, handled=False, message="504 5.5.4 Unrecognized authentication type")
        if len(args) > 1:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except ValueError:
                return AuthResult(success=False, handled=False, message="501 5.5.2 Can't decode base64")
        else:
            answer = await server.challenge_auth("")
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=True)
            blob = answer
        parsed = parse_bearer(mechanism, blob)
        if parsed is None:
            return AuthResult(success=False, handled=False, message=f"501 5.5.2 not an {mechanism} initial response")
        user, token = parsed
        try:
            claims = await asyncio.to_thread(self.introspection.claims, token)
        except (OSError, ValueError) as exc:
            log.error("AUTH %s for %r: introspection failed: %s", mechanism, user, exc)
            return AuthResult(success=False, handled=False, message=INTROSPECTION_FAILED)
        owner = str(claims.get("username", ""))
        if claims.get("active") is not True:
            refusal = TOKEN_REFUSED
        elif not local_part(owner) or local_part(owner) != local_part(user):
            refusal = TOKEN_OF_ANOTHER
        else:
            log.info("AUTH %s for %r: ok", mechanism, user)
            return AuthResult(success=True, auth_data=user)
        log.info("AUTH %s for %r: refused (%s)", mechanism, user, "inactive" if refusal is TOKEN_REFUSED else "other mailbox")
        # The error challenge, which the client answers with an empty line (XOAUTH2) or ^A (OAUTHBEARER).
        status = {"status": "invalid_token", "schemes": "bearer"}
        answer = await server.challenge_auth(json.dumps(status))
        return AuthResult(success=False, handled=not isinstance(answer, bytes), message=refusal)


class DovecotDelivery(BearerTokens):
    """aiosmtpd handler: accept recipients of the mail domain and deliver with dovecot-lda."""

    def __init__(self, users_file: Path, lda: Path, dovecot_config: Path):
        self.users_file = users_file
        self.lda = lda
        self.dovecot_config = dovecot_config

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options):
        name, _, domain = address.rpartition("@")
        if domain.lower() != MAIL_DOMAIN:
            return f"550 5.1.2 this server only delivers to @{MAIL_DOMAIN}"
        if name.lower() not in read_users(self.users_file):
            return f"550 5.1.1 no mailbox {address}"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope):
        failures = []
        for rcpt in envelope.rcpt_tos:
            problem = await self._deliver(envelope, rcpt)
            if problem:
                failures.append(f"{rcpt}: {problem}")
        if failures:
            log.error("delivery failed: %s", "; ".join(failures))
            return "451 4.3.0 local delivery failed, try again later"
        log.info("delivered from %s to %s", envelope.mail_from, ", ".join(envelope.rcpt_tos))
        return "250 2.0.0 delivered"

    async def _deliver(self, envelope: Envelope, rcpt: str) -> str | None:
        user = rcpt.rpartition("@")[0].lower()
        argv = [str(self.lda), "-c", str(self.dovecot_config), "-d", user, "-a", rcpt]
        if envelope.mail_from and envelope.mail_from != "<>":
            argv += ["-f", envelope.mail_from]
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        output, _ = await process.communicate(envelope.original_content or b"")
        if process.returncode != 0:
            return f"dovecot-lda exit {process.returncode}: {output.decode(errors='replace').strip()}"
        return None


def make_authenticator(users_file: Path):
    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", errors="replace")
        ok = check_credentials(users_file, login, auth_data.password)
        log.info("AUTH %s for %r: %s", mechanism, login, "ok" if ok else "refused")
        return AuthResult(success=ok, handled=False)

    return authenticate


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


async def serve(args: argparse.Namespace) -> None:
    handler = DovecotDelivery(args.users_file, args.lda, args.dovecot_config)
    if args.oauth2_introspection is not None:
        handler.introspection = Introspection.read(args.oauth2_introspection)
    context = server_context(args.cert, args.key)
    authenticator = make_authenticator(args.users_file)

    def factory() -> SMTP:
        return SMTP(
            handler, hostname="localhost", ident="mailintake stack SMTP relay", decode_data=False,
            enable_SMTPUTF8=True, tls_context=context, require_starttls=True,
            auth_required=True, auth_require_tls=True, authenticator=authenticator,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, host=HOST, port=args.port, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on %s:%d", HOST, args.port)
    await stop.wait()
    server.close()
    await server.wait_closed()
    log.info("stopped")


def _drop_legacy_login_data_warning(record: logging.LogRecord) -> bool:
    # aiosmtpd 1.4 itself sets the deprecated Session.login_data on every
    # successful AUTH and warns about it; nothing here uses that attribute.
    return "login_data is deprecated" not in record.getMessage()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--users-file", type=Path, required=True)
    parser.add_argument("--dovecot-config", type=Path, required=True)
    parser.add_argument("--lda", type=Path, required=True)
    parser.add_argument("--oauth2-introspection", type=Path, help="JSON file: url, client_id, client_secret, ca_file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every command at INFO; deliveries and AUTH results are enough here.
    aiosmtpd_log = logging.getLogger("mail.log")
    aiosmtpd_log.setLevel(logging.WARNING)
    aiosmtpd_log.addFilter(_drop_legacy_login_data_warning)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
