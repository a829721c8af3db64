"""The services' environment for the local stack, derived from its endpoints.

The services' defaults match the stack's default ports; when the stack runs on other
ports (``MAILINTAKE_STACK_*``), these variables point every service at it.
"""

from __future__ import annotations

from mailintake.stack import Endpoints
from services.fetcher.password_cipher import local_stack_key_file

SERVICE_PREFIXES = ("MAILINTAKE_FETCHER_", "MAILINTAKE_CLASSIFIER_", "MAILINTAKE_TICKETER_")
SENDER_SMTP_USER = "helpdesk"
"""The stack's mailbox whose login the sender submits mail with (the relay wants AUTH)."""


def service_environment(endpoints: Endpoints) -> dict[str, str]:
    environment = {"MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap}
    for prefix in SERVICE_PREFIXES:
        environment[f"{prefix}KAFKA_BOOTSTRAP_SERVERS"] = endpoints.kafka_bootstrap
        environment[f"{prefix}DATABASE_URL"] = endpoints.database_url
    relay_user = endpoints.user(SENDER_SMTP_USER)
    environment.update(
        {
            "MAILINTAKE_SENDER_DATABASE_URL": endpoints.database_url,
            "MAILINTAKE_SENDER_SMTP_HOST": endpoints.host,
            "MAILINTAKE_SENDER_SMTP_PORT": str(endpoints.smtp_port),
            "MAILINTAKE_SENDER_SMTP_SECURITY": "starttls",
            "MAILINTAKE_SENDER_SMTP_CA_FILE": str(endpoints.ca_file),
            "MAILINTAKE_SENDER_SMTP_USERNAME": relay_user.name,
            "MAILINTAKE_SENDER_SMTP_PASSWORD": relay_user.password,
            "MAILINTAKE_ADMIN_DATABASE_URL": endpoints.database_url,
            "MAILINTAKE_ADMIN_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap,
            # A development key kept in the stack's state: stored accounts of the local
            # stack are encrypted like production ones, with no key in the code.
            "MAILINTAKE_ACCOUNTS_ENCRYPTION_KEY_FILE": str(local_stack_key_file(endpoints.state_dir)),
        }
    )
    return environment
