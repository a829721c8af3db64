"""A :class:`StreamProcessor` run in a thread of the test, with what made it stop."""

from __future__ import annotations

import threading

from mailintake.runtime.stream_processor import StreamProcessor


class ProcessorThread:
    """Runs ``processor`` until :meth:`stop`; ``failures`` holds what it raised, if anything."""

    def __init__(self, processor: StreamProcessor) -> None:
        self.failures: list[BaseException] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(processor,), daemon=True)
        self._thread.start()

    def _run(self, processor: StreamProcessor) -> None:
        try:
            processor.run(self._halt)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            self.failures.append(exc)

    def stop(self, timeout: float = 60) -> None:
        self._halt.set()
        self._thread.join(timeout)
