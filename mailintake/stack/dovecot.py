"""Dovecot serving IMAP and POP3 from Maildirs in the state dir."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .component import Component
from .config_templates import render_to
from .mail_users import ensure_demo_users
from .oidc_provider import ISSUER_PATH, oidc_client, oidc_issuer
from .os_accounts import Accounts
from .preflight import MissingTool, find_dovecot
from .processes import process_start_ticks
from .settings import HOST, MAIL_DOMAIN
from .tls_probe import read_greeting


class Dovecot(Component):
    name = "dovecot"

    binary: Path | None = None
    lda: Path | None = None

    def port_settings(self) -> dict[str, int]:
        s = self.settings
        return {"imap_port": s.imap_port, "imaps_port": s.imaps_port, "pop3_port": s.pop3_port,
                "pop3s_port": s.pop3s_port}

    def address(self) -> str:
        s = self.settings
        return (f"imap {HOST}:{s.imap_port} (STARTTLS), imaps :{s.imaps_port}, "
                f"pop3 :{s.pop3_port} (STLS), pop3s :{s.pop3s_port}")

    def owns(self, argv: list[str]) -> bool:
        return bool(argv) and os.path.basename(argv[0]) == "dovecot" and str(self.layout.dovecot_config) in argv

    def find_tools(self, path: str | None = None) -> list[MissingTool]:
        found = find_dovecot(path)
        if isinstance(found, MissingTool):
            return [found]
        self.binary, self.lda = found
        return []

    def dirs_for_other_users(self, accounts: Accounts) -> list[tuple[str, object]]:
        if not accounts.privileged:
            return []
        return [
            (accounts.dovecot.name, self.layout.mail_users_file.parent),
            (accounts.dovecot.name, self.layout.ca_cert.parent),
            (accounts.mail.name, self.layout.mail_dir),
        ]

    @property
    def instance_name(self) -> str:
        # Distinct per state dir, so two stacks on one machine (tests) do not clash.
        return "mailintake-" + hashlib.sha256(str(self.layout.root).encode()).hexdigest()[:8]

    def prepare(self, accounts: Accounts) -> None:
        layout = self.layout
        for directory in (layout.dovecot_dir, layout.dovecot_state_dir):
            directory.mkdir(parents=True, exist_ok=True)
        layout.mail_dir.mkdir(mode=0o700, exist_ok=True)
        if accounts.privileged:
            os.chown(layout.mail_dir, accounts.mail.uid, accounts.mail.gid)
        ensure_demo_users(layout.mail_users_file)
        introspector = oidc_client("dovecot")
        render_to(
            "dovecot/dovecot-oauth2.conf.ext.j2", layout.dovecot_oauth2_config, mode=0o640,
            host=HOST, oidc_port=self.settings.oidc_port, issuer_path=ISSUER_PATH, issuer=oidc_issuer(self.settings),
            client_id=introspector.client_id, client_secret=introspector.client_secret,
            mail_domain=MAIL_DOMAIN, ca_file=layout.ca_cert,
        )
        if accounts.privileged:
            # The auth process (user dovecot) reads it; it holds the introspection secret.
            os.chown(layout.dovecot_oauth2_config, 0, accounts.dovecot.gid)
        render_to(
            "dovecot/dovecot.conf.j2", layout.dovecot_config,
            instance_name=self.instance_name, base_dir=layout.dovecot_base_dir,
            state_dir=layout.dovecot_state_dir, log_file=self.log_file, host=HOST, mail_domain=MAIL_DOMAIN,
            server_cert=layout.server_cert, server_key=layout.server_key, users_file=layout.mail_users_file,
            mail_uid=accounts.mail.uid, mail_gid=accounts.mail.gid, mail_dir=layout.mail_dir,
            privileged=accounts.privileged, run_user=accounts.mail.name,
            run_group=_group_name(accounts.mail.gid),
            imap_port=self.settings.imap_port, imaps_port=self.settings.imaps_port,
            pop3_port=self.settings.pop3_port, pop3s_port=self.settings.pop3s_port,
            oauth2_config=layout.dovecot_oauth2_config,
        )

    def clear_stale_state(self) -> None:
        """Drop master.pid of a dead master: Dovecot refuses to start while it names a live pid."""
        lock = self.layout.dovecot_base_dir / "master.pid"
        try:
            pid = int(lock.read_text().strip())
        except (OSError, ValueError):
            return
        if process_start_ticks(pid) is None or not self.owns_process(pid):
            lock.unlink(missing_ok=True)

    def command(self) -> list[str]:
        return [str(self.binary), "-F", "-c", str(self.layout.dovecot_config)]

    def probe(self, timeout: float) -> None:
        """Greetings on all four ports; the TLS ones verified against the stack's CA."""
        s, ca = self.settings, self.layout.ca_cert
        read_greeting(s.imaps_port, timeout, ca, b"* OK")
        read_greeting(s.pop3s_port, timeout, ca, b"+OK")
        read_greeting(s.imap_port, timeout, None, b"* OK")
        read_greeting(s.pop3_port, timeout, None, b"+OK")


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
