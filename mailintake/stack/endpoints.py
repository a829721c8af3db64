"""Where clients find the stack's servers, and with which credentials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .layout import StackLayout
from .mail_users import DEMO_USERS, MailUser
from .oidc_provider import OIDC_CLIENTS, OidcClient, oidc_issuer
from .postgres import APP_DATABASE, APP_PASSWORD, APP_ROLE
from .settings import HOST, MAIL_DOMAIN, StackSettings


@dataclass(frozen=True)
class Endpoints:
    """Addresses, ports and credentials of one stack (all on 127.0.0.1)."""

    host: str
    kafka_bootstrap: str
    kafka_port: int
    kafka_controller_port: int
    postgres_port: int
    database_url: str
    """SQLAlchemy URL (psycopg 3 driver) of the application database."""
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    smtp_port: int
    oidc_port: int
    oidc_issuer: str
    """Issuer URL of the OpenID Connect provider; its discovery document is at
    ``{oidc_issuer}/.well-known/openid-configuration``."""
    oidc_clients: tuple[OidcClient, ...]
    """The clients registered at the provider, with their secrets."""
    oidc_app_certificate: Path
    """PEM with the private key and certificate of the client ``mailintake-app-certificate``."""
    ca_file: Path
    """PEM file of the stack's CA: the only trust anchor clients need."""
    tls_server_name: str
    """DNS name in the server certificate; its IP SAN 127.0.0.1 verifies too, so
    clients that connect to ``host`` need no override."""
    mail_domain: str
    demo_users: tuple[MailUser, ...]
    state_dir: Path

    @classmethod
    def of(cls, settings: StackSettings) -> Endpoints:
        layout = StackLayout.of(settings)
        return cls(
            host=HOST,
            kafka_bootstrap=f"{HOST}:{settings.kafka_port}",
            kafka_port=settings.kafka_port,
            kafka_controller_port=settings.kafka_controller_port,
            postgres_port=settings.postgres_port,
            database_url=(
                f"postgresql+psycopg://{APP_ROLE}:{APP_PASSWORD}@{HOST}:{settings.postgres_port}/{APP_DATABASE}"
            ),
            imap_port=settings.imap_port,
            imaps_port=settings.imaps_port,
            pop3_port=settings.pop3_port,
            pop3s_port=settings.pop3s_port,
            smtp_port=settings.smtp_port,
            oidc_port=settings.oidc_port,
            oidc_issuer=oidc_issuer(settings),
            oidc_clients=OIDC_CLIENTS,
            oidc_app_certificate=layout.oidc_app_certificate,
            ca_file=layout.ca_cert,
            tls_server_name="localhost",
            mail_domain=MAIL_DOMAIN,
            demo_users=DEMO_USERS,
            state_dir=layout.root,
        )

    def user(self, name: str) -> MailUser:
        """The demo user called ``name``."""
        for user in self.demo_users:
            if user.name == name:
                return user
        raise KeyError(name)

    def oidc_client(self, client_id: str) -> OidcClient:
        """The client registered at the stack's provider as ``client_id``."""
        for client in self.oidc_clients:
            if client.client_id == client_id:
                return client
        raise KeyError(client_id)
