"""The admin service's FastAPI application (``mailintake run admin``).

Today it serves the read-only ticket API and its OpenAPI document (``/openapi.json``,
``/docs``), and ``/livez`` and ``/readyz`` for the orchestrator; account management and a
web page are to join this same app.
"""

from __future__ import annotations

from fastapi import FastAPI, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

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


def serve(settings: AdminSettings) -> None:
    """Serve the app with uvicorn until SIGTERM/SIGINT."""
    import uvicorn

    from mailintake.runtime.logs import configure_logging

    configure_logging("admin", settings.log_level)
    # log_config=None keeps the JSON logging configured above instead of uvicorn's own.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)
