"""The admin app's liveness and readiness, which the Helm chart's probes call."""

import pytest
from fastapi.testclient import TestClient

from services.admin.app import create_app
from services.admin.settings import AdminSettings

pytestmark = pytest.mark.stack


def test_ready_when_the_database_answers(stack):
    with TestClient(create_app(AdminSettings(database_url=stack.database_url))) as client:
        assert client.get("/livez").text == "ok\n"
        ready = client.get("/readyz")
        assert (ready.status_code, ready.text) == (200, "ok\n")


def test_not_ready_without_a_database_but_still_live():
    # Nothing listens on port 1: the database is unreachable.
    url = "postgresql+psycopg://nobody:nothing@127.0.0.1:1/none?connect_timeout=2"
    with TestClient(create_app(AdminSettings(database_url=url))) as client:
        assert client.get("/livez").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.text.startswith("database unavailable: OperationalError")
