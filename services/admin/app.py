"""The admin service's FastAPI application (``mailintake run admin``).

It serves the accounts web page (``/accounts``, with ``/login``), the accounts API
(``/api/accounts``), the read-only ticket API, the audit log (``/api/audit``), the
OpenAPI document (``/openapi.json``, ``/docs``), and ``/livez`` and ``/readyz`` for
the orchestrator. Every route but those two, the login page and the OpenAPI document
needs a token, or an OIDC access token where configured (see ``authentication``).
"""

from __future__ import annotations

import logging
from functools import cache

import structlog
from fastapi import Depends, FastAPI, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from mailintake.database import engine_for
from services.admin.access import AuditLog, TokenStore
from services.admin.account_editing import AccountEditor
from services.admin.accounts_api import install_error_handlers
from services.admin.accounts_api import router as accounts_router
from services.admin.authentication import authenticated
from services.admin.consent_flow import CALLBACK_PATH
from services.admin.oidc import OidcVerifier
from services.admin.pending_consents import PendingConsentStore
from services.admin.settings import AdminSettings
from services.admin.tickets_api import router as tickets_router
from services.admin.web_pages import mount_pages
from services.fetcher.password_cipher import PasswordCipher

# The name under which the token of MAILINTAKE_ADMIN_API_TOKEN is registered (and audited).
DEPLOYMENT_TOKEN_NAME = "deployment"

log = structlog.get_logger(__name__)


def create_app(settings: AdminSettings, cipher: PasswordCipher | None = None) -> FastAPI:
    """The app. ``cipher`` defaults to the key in MAILINTAKE_ACCOUNTS_ENCRYPTION_*, read on the first account request."""
    app = FastAPI(
        title="mailintake admin",
        version="1",
        description="Mail accounts (create, edit, check the connection), the audit log, and read-only access to the "
        "tickets, users and locations mailintake keeps. Authenticate with a bearer token from "
        "`mailintake admin token create NAME`.",
    )
    engine = engine_for(settings.database_url.get_secret_value())
    app.state.engine = engine
    app.state.token_store = TokenStore(engine)
    if settings.api_token is not None:
        outcome = app.state.token_store.register(DEPLOYMENT_TOKEN_NAME, settings.api_token.get_secret_value(), "deployment")
        log.info("admin.deployment_token", outcome=outcome, name=DEPLOYMENT_TOKEN_NAME)
    app.state.audit_log = AuditLog(engine)
    app.state.oidc_verifier = (
        OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url, settings.oidc_actor_claim)
        if settings.oidc_configured
        else None
    )

    @cache
    def accounts_cipher() -> PasswordCipher:
        from mailintake.runtime.settings import load_settings
        from services.fetcher.password_cipher import cipher_from_settings
        from services.fetcher.settings import AccountEncryptionSettings

        return cipher or cipher_from_settings(load_settings(AccountEncryptionSettings))

    @cache
    def account_editor() -> AccountEditor:
        from services.fetcher.account_store import AccountStore

        key = accounts_cipher()
        announce = None
        if settings.kafka_bootstrap_servers:
            from services.fetcher.mailbox_ownership import AccountNoticeWriter

            announce = AccountNoticeWriter(settings.kafka_bootstrap_servers)
        return AccountEditor(
            engine, AccountStore(engine, key), settings.check_timeout_seconds, settings.check_source_address, announce
        )

    @cache
    def pending_consents() -> PendingConsentStore:
        return PendingConsentStore(engine, accounts_cipher())

    app.state.account_editor = account_editor
    app.state.pending_consents = pending_consents
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(accounts_router)
    app.include_router(tickets_router, dependencies=[Depends(authenticated)])
    mount_pages(app)

    @app.get("/livez", include_in_schema=False, response_class=PlainTextResponse)
    def livez() -> str:
        return "ok\n"

    @app.get("/readyz", include_in_schema=False, response_class=PlainTextResponse)
    def readyz(response: Response) -> str:
        # Ready means the database answers: every API route needs it.
        try:
            with app.state.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            response.status_code = 503
            return f"database unavailable: {type(exc).__name__}\n"
        return "ok\n"

    return app


class CallbackQueryHidden(logging.Filter):
    """Keeps the consent callback's query out of the access log: it holds the authorization code."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: (client, method, path with query, HTTP version, status).
        if isinstance(record.args, tuple) and len(record.args) >= 3 and str(record.args[2]).startswith(CALLBACK_PATH + "?"):
            record.args = (*record.args[:2], f"{CALLBACK_PATH}?(hidden)", *record.args[3:])
        return True


def serve(settings: AdminSettings) -> None:
    """Serve the app with uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    from mailintake.runtime.logs import configure_logging

    configure_logging("admin", settings.log_level)
    logging.getLogger("uvicorn.access").addFilter(CallbackQueryHidden())
    # log_config=None keeps the JSON logging configured above instead of uvicorn's own.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
