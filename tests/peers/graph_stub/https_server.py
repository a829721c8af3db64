"""The stub's HTTPS endpoint: TLS with a certificate of the stack's CA, bearer tokens,
throttling on demand, and the Graph mail requests the fetcher sends.

Only these are understood (paths under ``/v1.0``; ``{folder}`` is an id or a well-known
name, and ``mailfolders('{id}')`` as Graph writes it in its own links works too):

- ``GET users/{user}/mailFolders/{folder}``
- ``GET users/{user}/mailFolders?$filter=displayName eq '...'`` (top-level folders)
- ``GET users/{user}/mailFolders/{folder}/childFolders?$filter=displayName eq '...'``
- ``GET users/{user}/mailFolders/{folder}/messages/delta`` (``$select``, ``$skiptoken``,
  ``$deltatoken``; ``Prefer: odata.maxpagesize=n``)
- ``GET users/{user}/messages/{id}/$value``
- ``PATCH users/{user}/messages/{id}`` (``isRead`` only)
- ``POST users/{user}/messages/{id}/move`` (``destinationId``: id or well-known name)
- ``DELETE users/{user}/messages/{id}``

Anything else gets a 400 naming what is not understood, so a test fails instead of
passing on a guess.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .access_tokens import RegisteredTokens, TokenRefusal, TokenValidator
from .mailboxes import Grant, StubMailbox, StubMailFolder, StubMessage, StubTenant

DEFAULT_PAGE_SIZE = 10
"""Graph's page size for messages when the client states no preference."""


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_body(code: str, message: str) -> dict:
    """Graph's JSON error object (OData v4 error, with the innerError Graph adds)."""
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": str(uuid.uuid4()),
            },
        }
    }


@dataclass(frozen=True)
class Action:
    """A change the client made to a message, stamped with the stub's wall clock."""

    at: float
    kind: str
    """mark_read, move or delete."""
    mailbox: str
    message_id: str
    message_id_header: str | None


@dataclass(frozen=True)
class RequestRecord:
    at: float
    method: str
    path: str
    status: int
    principal: str | None


@dataclass
class _Round:
    """One round of delta pages, fixed when its first page was asked for."""

    mailbox: str
    folder_id: str
    entries: list[dict]
    end_sequence: int
    generation: int
    select: list[str] | None


@dataclass
class _Throttle:
    status: int
    retry_after: str | None
    code: str
    message: str


def _b64(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value, separators=(",", ":")).encode()).decode().rstrip("=")


def _unb64(token: str) -> dict:
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        raise GraphError(400, "invalidRequest", "The state token is malformed.") from None


def _message_id_header(mime: bytes) -> str | None:
    value = BytesHeaderParser().parsebytes(mime).get("Message-ID")
    return str(value).strip() if value else None


_FOLDER_FUNCTION = re.compile(r"mailfolders\('([^']*)'\)", re.IGNORECASE)
_DISPLAY_NAME = re.compile(r"^displayName eq '((?:[^']|'')*)'$")


class _Handler(BaseHTTPRequestHandler):
    server: _StubHttpServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the body would wait
    # for the client's delayed ACK (40 ms on Linux) on every keep-alive request.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # tests assert on stub.requests and stub.actions, not on stderr

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_PATCH(self) -> None:  # noqa: N802
        self._serve("PATCH")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        stub = self.server.stub
        body = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        parts = urlsplit(self.path)
        principal = None
        stub.arrived()
        try:
            grant = self._authenticate()
            principal = grant.principal
            throttle = stub.next_throttle()
            if throttle is not None:
                headers = {"Retry-After": throttle.retry_after} if throttle.retry_after is not None else {}
                raise GraphError(throttle.status, throttle.code, throttle.message, headers)
            status, payload, content_type, headers = stub.answer(method, parts.path, parse_qs(parts.query), body,
                                                                 grant, self.headers, self._base_url())
        except GraphError as exc:
            status, content_type, headers = exc.status, "application/json", exc.headers
            payload = json.dumps(error_body(exc.code, exc.message)).encode()
        finally:
            stub.left()
        stub.record(RequestRecord(time.time(), method, self.path, status, principal))
        self.send_response(status)
        if payload or status != 204:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", str(uuid.uuid4()))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _base_url(self) -> str:
        return f"https://{self.headers.get('Host', 'localhost')}"

    def _authenticate(self) -> Grant:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        result = self.server.stub.tokens.check(token.strip() if scheme.lower() == "bearer" else "")
        if isinstance(result, TokenRefusal):
            challenge = 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'
            raise GraphError(401, "InvalidAuthenticationToken", result.message, {"WWW-Authenticate": challenge})
        return result


class _StubHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: GraphStub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stub = stub


@dataclass
class GraphStub:
    """A stub of the Microsoft Graph mail endpoints on 127.0.0.1 and a free port (a test peer, not Microsoft 365).

    ``before_action`` is called with each :class:`Action` just before the stub applies
    it (outside the stub's lock), so a test can check the moment itself.
    """

    tenant: StubTenant
    cert_file: Path
    key_file: Path
    tokens: TokenValidator = field(default_factory=RegisteredTokens)
    before_action: Callable[[Action], None] | None = None
    latency: float = 0.0
    """Seconds every request waits before it is answered: a round trip to a remote service."""
    actions: list[Action] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    max_in_flight: int = 0
    """The most requests that were being answered at one time."""

    def __post_init__(self) -> None:
        self._rounds: dict[str, _Round] = {}
        self._throttles: deque[_Throttle | None] = deque()
        self._record_lock = threading.Lock()
        self._in_flight = 0
        self._server = _StubHttpServer(self)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="graph-stub", daemon=True)

    # --- life cycle --------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> GraphStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GraphStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- test controls -----------------------------------------------------------------
    def throttle(self, times: int, *, retry_after: str | None = "1", status: int = 429, after: int = 0) -> None:
        """Answer ``times`` authenticated requests with ``status`` (429 or 503) and ``Retry-After``,
        starting after the next ``after`` requests."""
        if status == 429:
            code, message = "ApplicationThrottled", "Application is over its MailboxConcurrency limit."
        else:
            code, message = "serviceNotAvailable", "The service is temporarily unavailable. Please retry after a delay."
        with self._record_lock:
            self._throttles.extend([None] * after)
            self._throttles.extend(_Throttle(status, retry_after, code, message) for _ in range(times))

    def next_throttle(self) -> _Throttle | None:
        with self._record_lock:
            return self._throttles.popleft() if self._throttles else None

    def record(self, request: RequestRecord) -> None:
        with self._record_lock:
            self.requests.append(request)

    def arrived(self) -> None:
        with self._record_lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        if self.latency:
            time.sleep(self.latency)

    def left(self) -> None:
        with self._record_lock:
            self._in_flight -= 1

    # --- the Graph requests ----------------------------------------------------------------
    def answer(self, method: str, path: str, query: dict[str, list[str]], body: bytes, grant: Grant, headers,
               base_url: str) -> tuple[int, bytes, str, dict[str, str]]:
        path = _FOLDER_FUNCTION.sub(lambda m: "mailFolders/" + quote(m.group(1), safe=""), path)
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if segments[:2] != ["v1.0", "users"] or len(segments) < 4:
            raise GraphError(400, "BadRequest", f"Resource not found for the segment '{'/'.join(segments[:2])}'.")
        address, rest = segments[2], segments[3:]
        lowered = [s.lower() for s in rest]
        mailbox = self._open_mailbox(address, grant)
        allowed: set[str] = set()
        if method == "GET" and lowered[0] == "mailfolders":
            if len(rest) == 1:
                allowed = {"$filter", "$select"}
                result = self._folders_named(mailbox, mailbox.well_known("msgfolderroot"), query)
            elif len(rest) == 2:
                allowed = {"$select"}
                result = self._folder_json(mailbox, self._folder(mailbox, rest[1]))
            elif len(rest) == 3 and lowered[2] == "childfolders":
                allowed = {"$filter", "$select"}
                result = self._folders_named(mailbox, self._folder(mailbox, rest[1]), query)
            elif len(rest) == 4 and lowered[2:] == ["messages", "delta"]:
                allowed = {"$select", "$skiptoken", "$deltatoken"}
                self._refuse_unknown(query, allowed)
                return self._delta(mailbox, self._folder(mailbox, rest[1]), query, headers, base_url)
            else:
                raise GraphError(400, "BadRequest", f"The stub does not serve GET {path}")
            self._refuse_unknown(query, allowed)
            return 200, json.dumps(result).encode(), "application/json", {}
        if lowered[0] != "messages" or len(rest) < 2:
            raise GraphError(400, "BadRequest", f"The stub does not serve {method} {path}")
        self._refuse_unknown(query, set())
        with self.tenant.lock:
            message = mailbox.messages.get(rest[1])
        if message is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        if method == "GET" and lowered[2:] == ["$value"]:
            return 200, message.mime, "text/plain", {}
        if method == "PATCH" and len(rest) == 2:
            changes = self._json(body)
            if set(changes) != {"isRead"} or not isinstance(changes["isRead"], bool):
                raise GraphError(400, "invalidRequest", f"The stub updates isRead only, not {sorted(changes)}")
            self._act("mark_read", mailbox, message)
            with self.tenant.lock:
                mailbox.mark_read(message, changes["isRead"])
                return 200, json.dumps(self._message_json(message)).encode(), "application/json", {}
        if method == "POST" and lowered[2:] == ["move"]:
            destination = self._json(body).get("destinationId")
            if not isinstance(destination, str):
                raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            target = self._folder(mailbox, destination)
            self._act("move", mailbox, message)
            with self.tenant.lock:
                moved = mailbox.move(message, target)
                return 201, json.dumps(self._message_json(moved)).encode(), "application/json", {}
        if method == "DELETE" and len(rest) == 2:
            self._act("delete", mailbox, message)
            with self.tenant.lock:
                mailbox.delete(message)
            return 204, b"", "application/json", {}
        raise GraphError(400, "BadRequest", f"The stub does not serve {method} {path}")

    def _act(self, kind: str, mailbox: StubMailbox, message: StubMessage) -> None:
        action = Action(time.time(), kind, mailbox.address, message.id, _message_id_header(message.mime))
        if self.before_action is not None:
            self.before_action(action)
        with self._record_lock:
            self.actions.append(action)

    @staticmethod
    def _json(body: bytes) -> dict:
        try:
            value = json.loads(body or b"{}")
        except ValueError:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
        if not isinstance(value, dict):
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload.")
        return value

    @staticmethod
    def _refuse_unknown(query: dict[str, list[str]], allowed: set[str]) -> None:
        unknown = sorted(set(query) - allowed)
        if unknown:
            raise GraphError(400, "BadRequest", f"The stub does not understand the query option(s) {unknown}")

    def _open_mailbox(self, address: str, grant: Grant) -> StubMailbox:
        mailbox = self.tenant.mailbox(address)
        if mailbox is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{address}' is invalid.")
        if not self.tenant.may_open(grant, address):
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
        return mailbox

    @staticmethod
    def _folder(mailbox: StubMailbox, id_or_name: str) -> StubMailFolder:
        folder = mailbox.folder(id_or_name)
        if folder is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return folder

    def _folder_json(self, mailbox: StubMailbox, folder: StubMailFolder) -> dict:
        with self.tenant.lock:
            messages = mailbox.in_folder(folder.id)
            return {
                "id": folder.id,
                "displayName": folder.display_name,
                "parentFolderId": folder.parent_id,
                "childFolderCount": len(mailbox.children(folder.id)),
                "unreadItemCount": sum(not m.is_read for m in messages),
                "totalItemCount": len(messages),
                "isHidden": False,
            }

    def _folders_named(self, mailbox: StubMailbox, parent: StubMailFolder, query: dict[str, list[str]]) -> dict:
        wanted = None
        if "$filter" in query:
            match = _DISPLAY_NAME.match(query["$filter"][0])
            if match is None:
                raise GraphError(400, "BadRequest", f"The stub filters by displayName eq '...' only, not {query['$filter'][0]!r}")
            wanted = match.group(1).replace("''", "'").lower()
        children = [f for f in mailbox.children(parent.id) if wanted is None or f.display_name.lower() == wanted]
        return {"value": [self._folder_json(mailbox, f) for f in children]}

    @staticmethod
    def _message_json(message: StubMessage, select: set[str] | None = None) -> dict:
        full = {
            "@odata.type": "#microsoft.graph.message",
            "@odata.etag": f'W/"CQAAABYAAAA{abs(hash((message.id, message.is_read))) % 10**8:08d}"',
            "id": message.id,
            "receivedDateTime": message.received.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "isRead": message.is_read,
            "parentFolderId": message.folder_id,
            "internetMessageId": _message_id_header(message.mime),
        }
        if select is None:
            return full
        return {k: v for k, v in full.items() if k in select or k in ("@odata.type", "@odata.etag", "id")}

    # --- delta -------------------------------------------------------------------------------
    def _delta(self, mailbox: StubMailbox, folder: StubMailFolder, query: dict[str, list[str]], headers,
               base_url: str) -> tuple[int, bytes, str, dict[str, str]]:
        generation = self.tenant.delta_generation
        link_base = f"{base_url}/v1.0/users/{quote(mailbox.address)}/mailfolders('{folder.id}')/messages/delta"
        expired = GraphError(410, "SyncStateNotFound", "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
                             {"Location": link_base + "?$deltatoken="})
        page_size = DEFAULT_PAGE_SIZE
        applied = {}
        if found := re.search(r"odata\.maxpagesize=(\d+)", headers.get("Prefer", "")):
            page_size = max(1, int(found.group(1)))
            applied = {"Preference-Applied": f"odata.maxpagesize={page_size}"}
        if "$skiptoken" in query:
            state = _unb64(query["$skiptoken"][0])
            with self._record_lock:
                round_ = self._rounds.get(state.get("r", ""))
            if round_ is None or round_.generation != generation:
                raise expired
            offset = int(state["o"])
        else:
            select = set(query["$select"][0].split(",")) if "$select" in query else None
            with self.tenant.lock:
                if "$deltatoken" in query and query["$deltatoken"][0]:
                    state = _unb64(query["$deltatoken"][0])
                    if state.get("g") != generation:
                        raise expired
                    # The token carries the first request's options, as Graph's state tokens do.
                    select = set(state["sel"]) if state.get("sel") is not None else None
                    if state.get("f") != folder.id:
                        raise GraphError(400, "invalidRequest", "The delta token belongs to another folder.")
                    entries = self._changes_since(mailbox, folder, int(state["s"]), select)
                else:
                    entries = [self._message_json(m, select) for m in mailbox.in_folder(folder.id)]
                round_ = _Round(mailbox.address, folder.id, entries, mailbox.sequence, generation,
                                sorted(select) if select is not None else None)
            round_id = uuid.uuid4().hex
            with self._record_lock:
                self._rounds[round_id] = round_
            state, offset = {"r": round_id}, 0
        page = round_.entries[offset:offset + page_size]
        document: dict = {"@odata.context": f"{base_url}/v1.0/$metadata#Collection(message)", "value": page}
        if offset + page_size < len(round_.entries):
            skip = _b64({"r": state["r"], "o": offset + page_size})
            document["@odata.nextLink"] = f"{link_base}?$skiptoken={skip}"
        else:
            token = _b64({"f": folder.id, "s": round_.end_sequence, "g": generation, "sel": round_.select})
            document["@odata.deltaLink"] = f"{link_base}?$deltatoken={token}"
        return 200, json.dumps(document).encode(), "application/json", applied

    def _changes_since(self, mailbox: StubMailbox, folder: StubMailFolder, sequence: int, select: set[str] | None) -> list[dict]:
        """The latest state of every message of ``folder`` that changed after ``sequence``."""
        changed: dict[str, None] = {}
        for change in mailbox.changes:
            if change.sequence > sequence and change.folder_id == folder.id:
                changed.pop(change.message_id, None)
                changed[change.message_id] = None
        entries = []
        for message_id in changed:
            message = mailbox.messages.get(message_id)
            if message is not None and message.folder_id == folder.id:
                entries.append(self._message_json(message, select))
            else:
                entries.append({"@odata.type": "#microsoft.graph.message", "id": message_id, "@removed": {"reason": "deleted"}})
        return entries
