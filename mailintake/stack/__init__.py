"""The local development stack: Kafka, PostgreSQL, Dovecot (IMAP/POP3) and an SMTP relay.

Everything listens on 127.0.0.1 and keeps its state in one directory
(``.stack/`` of the repository by default)::

    from mailintake.stack import Stack

    endpoints = Stack().up()          # idempotent; fast when already running
    endpoints.database_url, endpoints.kafka_bootstrap, endpoints.ca_file
"""

from .endpoints import Endpoints
from .errors import StackError
from .mail_users import DEMO_USERS, MailUser
from .settings import HOST, MAIL_DOMAIN, StackSettings
from .stack import COMPONENT_NAMES, ComponentStatus, Stack, add_mail_user

__all__ = [
    "COMPONENT_NAMES",
    "DEMO_USERS",
    "HOST",
    "MAIL_DOMAIN",
    "ComponentStatus",
    "Endpoints",
    "MailUser",
    "Stack",
    "StackError",
    "StackSettings",
    "add_mail_user",
]
