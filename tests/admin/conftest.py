"""Fixtures of the admin tests: a live admin token, an API client holding it, and a
hostile IMAP server whose replies carry HTML."""

from __future__ import annotations

import random
import socket
import threading

import pytest
from fastapi.testclient import TestClient

from mailintake.database import engine_for
from services.admin.access import TokenStore
from services.admin.app import create_app
from services.admin.settings import AdminSettings
from services.fetcher.account_store import AccountStore


@pytest.fixture
def admin_token(stack, unique) -> str:
    return TokenStore(engine_for(stack.database_url)).create(f"tester-{unique}")


@pytest.fixture
def admin_app(stack):
    """The app; its checks connect from a loopback address of their own, because Dovecot
    delays each further failed login from one address (see tests/fetcher/conftest.py)."""
    rng = random.SystemRandom()
    source = f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(2, 254)}"
    return create_app(AdminSettings(database_url=stack.database_url, check_source_address=source))


@pytest.fixture
def anonymous(admin_app):
    """A client without any token."""
    with TestClient(admin_app) as client:
        yield client


@pytest.fixture
def api(admin_app, admin_token):
    """A client that sends the admin token as a bearer token."""
    with TestClient(admin_app, headers={"Authorization": f"Bearer {admin_token}"}) as client:
        yield client


@pytest.fixture
def account_document(stack, unique):
    """Call with a mail user (and fields) for an IMAPS account document as the API takes it;
    the account is deleted after the test if it was stored."""
    ids = set()

    def build(user, **fields) -> dict:
        document = {
            "id": f"adm-{unique}",
            "name": f"Admin test {unique}",
            "protocol": "imap",
            "host": stack.host,
            "port": stack.imaps_port,
            "security": "tls",
            "ca_file": str(stack.ca_file),
            "username": user.name,
            "password": user.password,
        } | fields
        ids.add(document["id"])
        return document

    yield build
    store = AccountStore(engine_for(stack.database_url), None)
    for account_id in ids:
        store.delete(account_id)


HOSTILE_REPLY = '[AUTHENTICATIONFAILED] <img src=x onerror="document.title=\'pwned\'"><b>Denied</b> & more'
"""What the hostile server answers to LOGIN: HTML that must show as text."""


@pytest.fixture
def hostile_imap_server():
    """A plain-text IMAP server on loopback that greets, lists capabilities and refuses
    every LOGIN with :data:`HOSTILE_REPLY`. Returns its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def converse(connection: socket.socket) -> None:
        with connection, connection.makefile("rwb") as stream:
            stream.write(b"* OK hostile server ready\r\n")
            stream.flush()
            for line in stream:
                tag, _, rest = line.decode("utf-8", "replace").strip().partition(" ")
                command = rest.split(" ", 1)[0].upper()
                if command == "CAPABILITY":
                    stream.write(f"* CAPABILITY IMAP4rev1 <i>X-HTML</i>\r\n{tag} OK done\r\n".encode())
                elif command == "LOGIN":
                    stream.write(f"{tag} NO {HOSTILE_REPLY}\r\n".encode())
                elif command == "LOGOUT":
                    stream.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                    stream.flush()
                    return
                else:
                    stream.write(f"{tag} BAD unknown\r\n".encode())
                stream.flush()

    def serve() -> None:
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(10)
            threading.Thread(target=converse, args=(connection,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stopping.set()
    thread.join(timeout=5)
    listener.close()
