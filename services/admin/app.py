"""The admin service's FastAPI application (``mailintake run admin``).

Today it serves the read-only ticket API and its OpenAPI document (``/openapi.json``,
``/docs``); account management and a web page are to join this same app.
"""

from __future__ import annotations

from fastapi import FastAPI

from mailintake.database import engine_for
from services.admin.settings import AdminSettings
from services.admin.tickets_api import router as tickets_router


def create_app(settings: AdminSettings) -> FastAPI:
    app = FastAPI(
        title="mailintake admin",
        version="1",
        description="Read-only access to the tickets, users and locations mailintake keeps.",
    )
    app.state.engine = engine_for(settings.database_url.get_secret_value())
    app.include_router(tickets_router)
    return app


def serve(settings: AdminSettings) -> None:
    """Serve the app with uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    from mailintake.runtime.logs import configure_logging

    configure_logging("admin", settings.log_level)
    # log_config=None keeps the JSON logging configured above instead of uvicorn's own.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)
