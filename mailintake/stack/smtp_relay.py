"""The stack's SMTP submission server (run as ``python -m mailintake.stack.smtp_relay``).

STARTTLS is required before anything else, AUTH (PLAIN or LOGIN) only after
TLS, and credentials are the mailbox users of the Dovecot passwd-file. Every
accepted message is handed to ``dovecot-lda`` for each recipient, so it
lands in that user's Maildir and can be read back over IMAP or POP3.
Recipients outside the stack's mail domain, or unknown there, get 550.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .mail_users import check_credentials, read_users
from .settings import HOST, MAIL_DOMAIN

log = logging.getLogger("mailintake.stack.smtp_relay")


class DovecotDelivery:
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosmtpd logs every command at INFO; deliveries and AUTH results are enough here.
    aiosmtpd_log = logging.getLogger("mail.log")
    aiosmtpd_log.setLevel(logging.WARNING)
    aiosmtpd_log.addFilter(_drop_legacy_login_data_warning)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
