"""The stub's HTTPS endpoint: TLS with a certificate of the stack's CA, HTTP authentication
(Basic, or Negotiate checked against a Kerberos keytab), and the SOAP operations.

It offers exactly the authentication schemes it is given, one ``WWW-Authenticate``
header each. It can offer NTLM but never completes an NTLM handshake: the fetcher must
refuse NTLM before sending anything, and a test that gets that far fails.
"""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from lxml import etree

from .mail_store import StubExchange, StubUser
from .soap_operations import Call, CallRecord, SoapFault, answer, fault, impersonated_address, operation_of

EWS_PATH = "/EWS/Exchange.asmx"


class _Handler(BaseHTTPRequestHandler):
    server: _StubHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # tests assert on stub.calls, not on stderr

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.split("?")[0] != EWS_PATH:
            self._send(404, b"not found", "text/plain")
            return
        authenticated = self._authenticate()
        if authenticated is None:
            return
        user, scheme, reply_header = authenticated
        try:
            envelope = etree.fromstring(body)
            if self.server.stub.keep_requests:
                self.server.stub.requests.append(body)
            operation, request = operation_of(envelope)
            record = CallRecord(
                operation=operation,
                user=user.name,
                auth_scheme=scheme,
                anchor_mailbox=self.headers.get("X-AnchorMailbox"),
                impersonated=impersonated_address(envelope),
            )
            self.server.stub.calls.append(record)
            with self.server.stub.lock:
                payload = answer(Call(self.server.stub.exchange, user, record), operation, request)
            status = 200
        except (SoapFault, etree.XMLSyntaxError) as exc:
            payload, status = fault(str(exc)), 500
        self._send(status, payload, "text/xml; charset=utf-8", reply_header)

    def _challenge(self) -> None:
        self.send_response(401)
        for scheme in self.server.stub.offered_schemes:
            self.send_header("WWW-Authenticate", scheme if scheme != "Basic" else 'Basic realm="mailintake EWS stub"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _authenticate(self) -> tuple[StubUser, str, tuple[str, str] | None] | None:
        """(user, scheme, header for the reply) or None after answering 401 itself."""
        header = self.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        offered = {s.lower() for s in self.server.stub.offered_schemes}
        stub = self.server.stub
        if scheme.lower() == "basic" and "basic" in offered:
            login, _, password = base64.b64decode(credentials).decode("utf-8").partition(":")
            user = stub.exchange.user_for_login(login)
            if user is not None and user.password == password:
                stub.logins.append(("Basic", login))
                return user, "Basic", None
        elif scheme.lower() == "negotiate" and "negotiate" in offered:
            accepted = stub.accept_negotiate(base64.b64decode(credentials))
            if accepted is not None:
                principal, reply_token = accepted
                stub.logins.append(("Negotiate", principal))
                user = stub.exchange.user_for_login(principal)
                if user is not None:
                    reply = ("WWW-Authenticate", "Negotiate " + base64.b64encode(reply_token).decode()) if reply_token else None
                    return user, "Negotiate", reply
        elif scheme:
            stub.logins.append((scheme, "refused"))
        self._challenge()
        return None

    def _send(self, status: int, payload: bytes, content_type: str, extra_header: tuple[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if extra_header:
            self.send_header(*extra_header)
        self.end_headers()
        self.wfile.write(payload)


class _StubHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, stub: EwsStub) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stub = stub


class EwsStub:
    """A stub of an Exchange server's EWS endpoint on 127.0.0.1 and a free port (a test peer, not Exchange).

    ``offered_schemes`` are the HTTP authentication schemes it asks for (``Negotiate``,
    ``NTLM``, ``Basic``); ``keytab`` is the Kerberos keytab of ``HTTP/localhost`` that
    Negotiate tokens are checked against.
    """

    def __init__(
        self,
        exchange: StubExchange,
        cert_file: Path,
        key_file: Path,
        offered_schemes: Sequence[str] = ("Basic",),
        keytab: Path | None = None,
    ) -> None:
        self.exchange = exchange
        self.offered_schemes = list(offered_schemes)
        self.keytab = keytab
        self.calls: list[CallRecord] = []
        self.logins: list[tuple[str, str]] = []
        """(scheme, login or principal) of every authentication attempt, accepted or not."""
        self.negotiated_mechanisms: list[str] = []
        self.keep_requests = False
        self.requests: list[bytes] = []
        """Raw SOAP request bodies, kept when ``keep_requests`` is set (for debugging a test)."""
        """OIDs of the GSS mechanisms inside accepted Negotiate tokens (Kerberos: 1.2.840.113554.1.2.2)."""
        self.lock = threading.Lock()
        self._server = _StubHttpServer(self)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="ews-stub", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, host: str = "localhost") -> str:
        return f"https://{host}:{self.port}{EWS_PATH}"

    def start(self) -> EwsStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> EwsStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def accept_negotiate(self, token: bytes) -> tuple[str, bytes | None] | None:
        """Check a SPNEGO/Kerberos token with the keytab: (client principal, reply token) or None."""
        import gssapi

        if self.keytab is None:
            return None
        try:
            credentials = gssapi.Credentials(usage="accept", store={"keytab": str(self.keytab)})
            context = gssapi.SecurityContext(creds=credentials, usage="accept")
            reply = context.step(token)
        except gssapi.exceptions.GSSError as exc:
            self.logins.append(("Negotiate", f"rejected: {exc}"))
            return None
        if not context.complete:
            return None
        self.negotiated_mechanisms.append(context.mech.dotted_form)
        return str(context.initiator_name), reply

    def calls_of(self, operation: str) -> list[CallRecord]:
        return [call for call in self.calls if call.operation == operation]

