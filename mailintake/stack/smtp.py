"""The SMTP relay process (see smtp_relay) as a stack component."""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import sys
from pathlib import Path

from .component import Component, ProbeFailed
from .oidc_provider import oidc_client, oidc_issuer
from .os_accounts import Accounts
from .preflight import MissingTool, find_dovecot
from .settings import HOST
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

    @property
    def introspection_file(self) -> Path:
        return self.layout.oidc_dir / "smtp-introspection.json"

    def prepare(self, accounts: Accounts) -> None:
        """The relay shares Dovecot's users file and the stack's certificate; for bearer tokens it
        introspects at the stack's provider as Dovecot's introspection client (the one such client)."""
        introspector = oidc_client("dovecot")
        document = {
            "url": f"{oidc_issuer(self.settings)}/token/introspection",
            "client_id": introspector.client_id,
            "client_secret": introspector.client_secret,
            "ca_file": str(self.layout.ca_cert),
        }
        self.introspection_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.introspection_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        tmp.replace(self.introspection_file)

    def command(self) -> list[str]:
        layout = self.layout
        return [
            sys.executable, "-m", RELAY_MODULE, "--port", str(self.settings.smtp_port),
            "--cert", str(layout.server_cert), "--key", str(layout.server_key),
            "--users-file", str(layout.mail_users_file), "--dovecot-config", str(layout.dovecot_config),
            "--lda", str(self.lda), "--oauth2-introspection", str(self.introspection_file),
        ]

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
