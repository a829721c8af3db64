"""ConfluentRegistry against a stand-in for the registry's REST API on the loopback address."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import avro.schema
import pytest

from mailintake.contracts import InvalidMessage, TopicCodec
from mailintake.contracts.errors import RegistryUnavailable, UnregisteredSchema
from mailintake.contracts.examples import example_messages
from mailintake.contracts.registry import REGISTRY_URL_ENV, ConfluentRegistry, default_registry
from mailintake.contracts.topics import load_topics

TOPIC = load_topics()["mail.raw"]
SCHEMA_TEXT = TOPIC.schema_path.read_text()
SCHEMA_ID = 41
CREDENTIALS = "Basic " + base64.b64encode(b"intake:s3cret").decode()


class _Registry(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.requests.append(("POST", self.path))
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.headers["Content-Type"] == "application/vnd.schemaregistry.v1+json"
        same = avro.schema.parse(body["schema"]).to_json() == avro.schema.parse(SCHEMA_TEXT).to_json()
        if self.path == "/subjects/mail.raw-value" and same:
            self._answer(200, {"subject": "mail.raw-value", "id": SCHEMA_ID, "version": 3, "schema": body["schema"]})
        else:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path))
        if self.headers.get("Authorization") != CREDENTIALS:
            self._answer(401, {"error_code": 401, "message": "Unauthorized"})
        elif self.path == f"/schemas/ids/{SCHEMA_ID}":
            self._answer(200, {"schema": SCHEMA_TEXT})
        elif self.path == "/schemas/ids/500":
            self._answer(500, {"error_code": 50001, "message": "Error in the backend data store"})
        else:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})


@pytest.fixture
def registry_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Registry.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_ids_come_from_the_registry_and_are_cached(registry_url):
    registry = ConfluentRegistry(registry_url)
    schema = avro.schema.parse(SCHEMA_TEXT)
    assert registry.id_for("mail.raw-value", schema) == SCHEMA_ID
    assert registry.id_for("mail.raw-value", schema) == SCHEMA_ID
    assert _Registry.requests == [("POST", "/subjects/mail.raw-value")]


def test_a_schema_the_registry_lacks_is_unregistered(registry_url):
    with pytest.raises(UnregisteredSchema, match="mail.classified-value"):
        ConfluentRegistry(registry_url).id_for("mail.classified-value", avro.schema.parse(SCHEMA_TEXT))


def test_codec_round_trips_through_the_registry_with_credentials(registry_url):
    url = registry_url.replace("http://", "http://intake:s3cret@")
    codec = TopicCodec(TOPIC, ConfluentRegistry(url))
    value = example_messages(TOPIC)[0].value
    data = codec.encode(value)
    assert data[1:5] == SCHEMA_ID.to_bytes(4, "big")
    assert codec.decode(data) == value


def test_an_id_the_registry_lacks_is_an_invalid_message(registry_url):
    url = registry_url.replace("http://", "http://intake:s3cret@")
    codec = TopicCodec(TOPIC, ConfluentRegistry(url))
    with pytest.raises(InvalidMessage, match="no schema with id 7"):
        codec.decode(b"\x00\x00\x00\x00\x07\x00")


def test_a_failing_registry_is_not_taken_for_a_bad_message(registry_url):
    codec = TopicCodec(TOPIC, ConfluentRegistry(registry_url))
    with pytest.raises(RegistryUnavailable, match="HTTP 401"):
        codec.decode(b"\x00\x00\x00\x00\x29\x00")
    url = registry_url.replace("http://", "http://intake:s3cret@")
    with pytest.raises(RegistryUnavailable, match="HTTP 500"):
        TopicCodec(TOPIC, ConfluentRegistry(url)).decode(b"\x00\x00\x00\x01\xf4\x00")


def test_an_unreachable_registry_is_unavailable():
    registry = ConfluentRegistry("http://127.0.0.1:9", timeout=2)
    with pytest.raises(RegistryUnavailable):
        registry.schema_by_id(1)


def test_the_url_setting_selects_the_confluent_registry(monkeypatch, registry_url):
    monkeypatch.setenv(REGISTRY_URL_ENV, registry_url)
    registry = default_registry()
    assert isinstance(registry, ConfluentRegistry)
    assert registry.url == registry_url
