"""Paths inside the stack's state directory, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .settings import StackSettings

#: deploy/local of the source checkout this package was loaded from: the
#: config templates and the Kafka pom live there, not in the state directory.
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "local"


@dataclass(frozen=True)
class StackLayout:
    """Every file and directory the stack writes, derived from the state directory."""

    root: Path

    @classmethod
    def of(cls, settings: StackSettings) -> StackLayout:
        return cls(settings.state_dir)

    @property
    def lock_file(self) -> Path:
        return self.root / "stack.lock"

    @property
    def run_dir(self) -> Path:
        """Pid files of the processes `up` started."""
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def pid_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.pid"

    def log_file(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    # TLS
    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def ca_cert(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.tls_dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.tls_dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.tls_dir / "server.key"

    # Kafka
    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_libs(self) -> Path:
        return self.kafka_dir / "libs"

    @property
    def kafka_data(self) -> Path:
        return self.kafka_dir / "data"

    @property
    def kafka_config(self) -> Path:
        return self.kafka_dir / "server.properties"

    @property
    def kafka_log4j_config(self) -> Path:
        return self.kafka_dir / "log4j2.properties"

    # PostgreSQL
    @property
    def postgres_dir(self) -> Path:
        return self.root / "postgres"

    @property
    def postgres_data(self) -> Path:
        return self.postgres_dir / "data"

    @property
    def postgres_socket_dir(self) -> Path:
        return self.postgres_dir / "socket"

    # Dovecot and mail
    @property
    def dovecot_dir(self) -> Path:
        return self.root / "dovecot"

    @property
    def dovecot_config(self) -> Path:
        return self.dovecot_dir / "dovecot.conf"

    @property
    def dovecot_base_dir(self) -> Path:
        return self.dovecot_dir / "run"

    @property
    def dovecot_state_dir(self) -> Path:
        return self.dovecot_dir / "state"

    @property
    def dovecot_oauth2_config(self) -> Path:
        """Settings of Dovecot's oauth2 passdb (the introspection endpoint and its secret)."""
        return self.dovecot_dir / "dovecot-oauth2.conf.ext"

    @property
    def mail_users_file(self) -> Path:
        return self.dovecot_dir / "users"

    @property
    def mail_dir(self) -> Path:
        """Parent of every user's home; each home holds that user's Maildir."""
        return self.root / "mail"

    # OpenID Connect provider
    @property
    def oidc_dir(self) -> Path:
        """The provider's config and its signing keys."""
        return self.root / "oidc"

    @property
    def oidc_app_certificate(self) -> Path:
        """Private key and certificate (PEM) of the provider's client ``mailintake-app-certificate``."""
        return self.oidc_dir / "app-certificate.pem"
