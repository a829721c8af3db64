"""The stack's SMTP submission server (run as ``python -m mailintake.stack.smtp_relay``).

STARTTLS is required before anything else, AUTH (PLAIN or LOGIN) only after
TLS, and credentials are the mailbox users of the Dovecot passwd-file. AUTH XOAUTH2
and OAUTHBEARER take an access token of the stack's OpenID Connect provider instead, introspected
there as Dovecot does (the token's ``username`` claim must name the SASL user). Every
accepted message is handed to ``dovecot-lda`` for each recipient, so it
lands in that user's Maildir and can be read back over IMAP or POP3.
Recipients outside the stack's mail domain, or unknown there, get 550.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import os
import signal
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from .mail_users import check_credentials, read_users
from .settings import HOST, INTROSPECTION_SECRET_VARIABLE, MAIL_DOMAIN

log = logging.getLogger("mailintake.stack.smtp_relay")


class TokenIntrospection:
    """RFC 7662 introspection at the stack's provider: whose mailbox a token is for, if it is active."""

    def __init__(self, url: str, client_id: str, secret: str, ca_file: Path):
        self.url = url
        self._authorization = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        self._context = ssl.create_default_context(cafile=str(ca_file))

    def mailbox_of(self, token: str) -> str | None:
        request = urllib.request.Request(
            self.url, data=urllib.parse.urlencode({"token": token}).encode(),
            headers={"Authorization": self._authorization, "Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._context) as answer:
                claims = json.load(answer)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.error("introspection at %s failed: %s", self.url, exc)
            return None
        username = claims.get("username")
        return str(username) if claims.get("active") is True and username else None


def _local_part(user: str) -> str:
    # As Dovecot's %Ln: "alice" and "alice@mailintake.test" are the same mailbox.
    return user.rpartition("@")[0].lower() if "@" in user else user.lower()


def parse_bearer(mechanism: str, blob: bytes) -> tuple[str, str] | None:
    """(user, token) of an XOAUTH2 or OAUTHBEARER initial response, or None if it is not one."""
    text = blob.decode("utf-8", errors="replace")
    if mechanism == "XOAUTH2":
        fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
        user = fields.get("user")
    else:
        # The GS2 header names the user: "n,a=USER,".
        header, _, rest = text.partition("\x01")
        user = next((part[2:] for part in header.split(",") if part.startswith("a=")), None)
        fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
    scheme, _, token = fields.get("auth", "").partition(" ")
    if not user or scheme.lower() != "bearer" or not token:
        return None
    return user, token


class DovecotDelivery:
    """aiosmtpd handler: accept recipients of the mail domain and deliver with dovecot-lda."""

    def __init__(self, users_file: Path, lda: Path, dovecot_config: Path, introspection: TokenIntrospection | None = None):
        self.users_file = users_file
        self.lda = lda
        self.dovecot_config = dovecot_config
        self.introspection = introspection

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 - aiosmtpd's naming
        """AUTH XOAUTH2: ``user=U^Aauth=Bearer T^A^A``; a refused token gets the error
        challenge Dovecot sends, then (after the client's empty answer) 535."""
        return await self._bearer(server, "XOAUTH2", args)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802 - aiosmtpd's naming
        """AUTH OAUTHBEARER (RFC 7628): ``n,a=U,^Aauth=Bearer T^A^A``; a refused token gets the
        RFC's error challenge, then (after the client's ^A) 535."""
        return await self._bearer(server, "OAUTHBEARER", args)

    async def _bearer(self, server: SMTP, mechanism: str, args: list[str]) -> AuthResult:
        if len(args) > 1:
            try:
                blob: bytes = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                return AuthResult(success=False, handled=False)
        else:
            # challenge_auth hands back the client's answer already base64-decoded.
            answer = await server.challenge_auth("")
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            blob = answer
        parsed = parse_bearer(mechanism, blob)
        if parsed is None:
            return AuthResult(success=False, handled=False)
        user, token = parsed
        mailbox = await asyncio.to_thread(self.introspection.mailbox_of, token) if self.introspection else None
        if mailbox is not None and _local_part(mailbox) == _local_part(user):
            log.info("AUTH %s for %r: ok", mechanism, user)
            return AuthResult(success=True, auth_data=user)
        log.info("AUTH %s for %r: refused", mechanism, user)
        status = {"status": "401", "schemes": "bearer", "scope": "mail"} if mechanism == "XOAUTH2" else {
            "status": "invalid_token", "schemes": "bearer", "scope": "mail"}
        answer = await server.challenge_auth(json.dumps(status))
        return AuthResult(success=False, handled=answer is MISSING)

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
    introspection = None
    if args.introspection_url:
        introspection = TokenIntrospection(
            args.introspection_url, args.introspection_client, os.environ.get(INTROSPECTION_SECRET_VARIABLE, ""), args.ca_file
        )
    handler = DovecotDelivery(args.users_file, args.lda, args.dovecot_config, introspection)
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
    parser.add_argument("--introspection-url", help="RFC 7662 endpoint for AUTH XOAUTH2 tokens (secret in $%s)" % INTROSPECTION_SECRET_VARIABLE)
    parser.add_argument("--introspection-client", default="dovecot")
    parser.add_argument("--ca-file", type=Path, help="CA of the introspection endpoint's certificate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every command at INFO; deliveries and AUTH results are enough here.
    aiosmtpd_log = logging.getLogger("mail.log")
    aiosmtpd_log.setLevel(logging.WARNING)
    aiosmtpd_log.addFilter(_drop_legacy_login_data_warning)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
