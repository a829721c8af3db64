"""A slow network link to a real server: a loopback TCP forwarder that caps the rate of
what the server sends. Tests use it to make a poll of a real Dovecot mailbox last long
enough for something (a rebalance) to happen in the middle of it, and, uncapped on a
given port, to bring a server up at an address where nothing listened before."""

from __future__ import annotations

import socket
import threading
import time


class SlowLink:
    """Forwards 127.0.0.1:``port`` (by default a free one) to ``target``; server-to-client
    bytes at ``bytes_per_second``, or as they come with None."""

    def __init__(self, target: tuple[str, int], bytes_per_second: int | None, *, port: int = 0) -> None:
        self._target = target
        self._rate = bytes_per_second
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            threading.Thread(target=self._pipe, args=(client, server, None), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self._rate), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, rate: int | None) -> None:
        chunk = 16384 if rate is None else max(1, rate // 20)
        try:
            while data := source.recv(chunk):
                started = time.monotonic()
                sink.sendall(data)
                if rate is not None:
                    time.sleep(max(0.0, len(data) / rate - (time.monotonic() - started)))
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
