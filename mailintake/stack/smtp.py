"""The SMTP relay process (see smtp_relay) as a stack component."""

from __future__ import annotations

import os
import smtplib
import ssl
import sys
from pathlib import Path

from .component import Component, ProbeFailed
from .oidc_provider import oidc_client, oidc_issuer
from .os_accounts import Accounts
from .preflight import MissingTool, find_dovecot
from .processes import ProcessRecord, spawn
from .settings import HOST, INTROSPECTION_SECRET_VARIABLE
from .tls_probe import client_context

RELAY_MODULE = "mailintake.stack.smtp_relay"


class SmtpRelay(Component):
    name = "smtp"
    stop_timeout = 10.0

    lda: Path | None = None

    def port_settings(self) -> dict[str, int]:
        return {"smtp_port": self.settings.smtp_port}

    def address(self) -> str:
        return f"{HOST}:{self.settings.smtp_port} (STARTTLS, AUTH PLAIN/LOGIN/XOAUTH2/OAUTHBEARER after TLS)"

    def owns(self, argv: list[str]) -> bool:
        return RELAY_MODULE in argv and str(self.layout.mail_users_file) in argv

    def find_tools(self, path: str | None = None) -> list[MissingTool]:
        found = find_dovecot(path)
        if isinstance(found, MissingTool):
            return [MissingTool(self.name, found.message)]
        self.lda = found[1]
        return []

    def prepare(self, accounts: Accounts) -> None:
        """Nothing to write: the relay shares Dovecot's users file and the stack's certificate."""

    def command(self) -> list[str]:
        layout = self.layout
        return [
            sys.executable, "-m", RELAY_MODULE, "--port", str(self.settings.smtp_port),
            "--cert", str(layout.server_cert), "--key", str(layout.server_key),
            "--users-file", str(layout.mail_users_file), "--dovecot-config", str(layout.dovecot_config),
            "--lda", str(self.lda),
            # XOAUTH2 tokens are introspected at the provider, as Dovecot does, with its client.
            "--introspection-url", f"{oidc_issuer(self.settings)}/token/introspection",
            "--introspection-client", oidc_client("dovecot").client_id, "--ca-file", str(layout.ca_cert),
        ]

    def start(self, accounts: Accounts) -> ProcessRecord:
        record = spawn(
            self.command(), log_file=self.log_file, cwd=self.layout.root,
            env={**os.environ, INTROSPECTION_SECRET_VARIABLE: oidc_client("dovecot").client_secret},
        )
        record.write(self.pid_file)
        return record

    def probe(self, timeout: float) -> None:
        """EHLO, STARTTLS verified against the CA, EHLO again, and AUTH on offer."""
        try:
            with smtplib.SMTP(HOST, self.settings.smtp_port, local_hostname="localhost", timeout=timeout) as smtp:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise ProbeFailed("STARTTLS not offered")
                smtp.starttls(context=client_context(self.layout.ca_cert))
                smtp.ehlo()
                if not smtp.has_extn("auth"):
                    raise ProbeFailed("AUTH not offered after STARTTLS")
        except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
            raise ProbeFailed(f"{HOST}:{self.settings.smtp_port}: {exc}") from None
