"""Client-side checks of the TLS servers, verifying against the stack's CA."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from .component import ProbeFailed
from .settings import HOST

#: The name in the server certificate that clients check.
SERVER_NAME = "localhost"


def client_context(ca_file: Path) -> ssl.SSLContext:
    """A TLS client context trusting only the stack's CA, with full verification."""
    return ssl.create_default_context(cafile=str(ca_file))


def read_greeting(port: int, timeout: float, ca_file: Path | None, expect: bytes) -> bytes:
    """Connect (with TLS when ``ca_file`` is given), read the first line, check its prefix."""
    try:
        raw = socket.create_connection((HOST, port), timeout=timeout)
    except OSError as exc:
        raise ProbeFailed(f"{HOST}:{port}: {exc.strerror or exc}") from None
    try:
        conn: socket.socket = raw
        if ca_file is not None:
            conn = client_context(ca_file).wrap_socket(raw, server_hostname=SERVER_NAME)
        conn.settimeout(timeout)
        line = conn.makefile("rb").readline(512)
    except ssl.SSLError as exc:
        raise ProbeFailed(f"{HOST}:{port}: TLS failed: {exc}") from None
    except OSError as exc:
        raise ProbeFailed(f"{HOST}:{port}: {exc}") from None
    finally:
        raw.close()
    if not line.startswith(expect):
        raise ProbeFailed(f"{HOST}:{port}: unexpected greeting {line[:80]!r}")
    return line
