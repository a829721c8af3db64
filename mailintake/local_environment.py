"""The services' environment for the local stack, derived from its endpoints.

The services' defaults match the stack's default ports; when the stack runs on other
ports (``MAILINTAKE_STACK_*``), these variables point every service at it.
"""

from __future__ import annotations

from mailintake.stack import Endpoints

SERVICE_PREFIXES = ("MAILINTAKE_FETCHER_", "MAILINTAKE_CLASSIFIER_", "MAILINTAKE_TICKETER_")


def service_environment(endpoints: Endpoints) -> dict[str, str]:
    environment = {"MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS": endpoints.kafka_bootstrap}
    for prefix in SERVICE_PREFIXES:
        environment[f"{prefix}KAFKA_BOOTSTRAP_SERVERS"] = endpoints.kafka_bootstrap
        environment[f"{prefix}DATABASE_URL"] = endpoints.database_url
    return environment
