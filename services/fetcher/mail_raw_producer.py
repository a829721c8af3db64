"""The fetcher's Kafka producer: aiokafka in an event loop of its own, called from the poll threads.

The polls run in worker threads and wait on mail servers synchronously. Each hands
over a whole chunk of records at once (:meth:`MailRawProducer.send`), and the loop's
thread sends them as record batches (``mailintake/runtime/record_batches.py``). A
chunk comes back as one future, done when Kafka acknowledged every record of it, or
failed with the first refusal. The fetcher acts on a mailbox only after that.

Through kafka-python, each record was a ``send`` of its own, with a wake-up of the
sender thread for every new batch: 29 % of the fetcher's samples in the end-to-end bench
(BENCHMARKS.md, "the local broker's JIT, and the fetcher's producer on aiokafka").

Order: a poll sends a chunk only after the previous chunk of its mailbox was
acknowledged, so a mailbox's records reach their partition in fetch order. Within a
chunk, ``send_in_batches`` keeps the order.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Sequence
from concurrent.futures import Future

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from mailintake.runtime.record_batches import batch_producer, key_partitions, send_in_batches
from mailintake.runtime.stream_processor import Output

log = structlog.get_logger(__name__)


class MailRawProducer:
    """An idempotent acks=all producer whose ``send`` takes a chunk of records from any thread.

    It connects on the first send, and again on the next send after a failed connect,
    so a fetcher that starts while Kafka is away polls nothing until Kafka answers, and
    says so as a failed produce step for each due account, instead of exiting.
    """

    def __init__(self, bootstrap_servers: str, *, client_id: str = "fetcher", max_request_bytes: int) -> None:
        self._servers = bootstrap_servers.split(",")
        self._client_id = client_id
        self._max_request_bytes = max_request_bytes
        self._producer: AIOKafkaProducer | None = None
        self._loop = asyncio.new_event_loop()
        self._started: asyncio.Lock | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="mail-raw-producer", daemon=True)
        self._thread.start()

    def send(self, topic: str, key: bytes, values: Sequence[bytes]) -> Future[int]:
        """Produce ``values`` under ``key``; the future gives how many record batches Kafka acknowledged."""
        return asyncio.run_coroutine_threadsafe(self._send(topic, key, values), self._loop)

    def close(self, timeout: float) -> None:
        """Send what waits, stop the producer and its loop; records not acknowledged by then are not waited for."""
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout)
        except Exception as exc:  # noqa: BLE001 - closing goes on; the unacknowledged mails were not acted on
            log.warning("producer.close_failed", error=f"{type(exc).__name__}: {exc}")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    async def _send(self, topic: str, key: bytes, values: Sequence[bytes]) -> int:
        producer = await self._connected()
        partition_for_key = await key_partitions(producer, [topic])
        sends = await send_in_batches(producer, [Output(topic, key, value) for value in values], partition_for_key)
        await asyncio.gather(*sends)
        return len(sends)

    async def _connected(self) -> AIOKafkaProducer:
        if self._started is None:
            self._started = asyncio.Lock()
        async with self._started:
            if self._producer is None:
                producer = batch_producer(self._servers, self._client_id, self._max_request_bytes)
                try:
                    # Started in a context of its own: the producer's background tasks inherit
                    # it, and their log records would otherwise carry the account and poll
                    # cycle of whichever poll happened to send first, for as long as they run.
                    await asyncio.get_running_loop().create_task(producer.start(), context=contextvars.Context())
                except KafkaConnectionError as exc:
                    await producer.stop()
                    # aiokafka names the address as a tuple; say it as it was configured.
                    raise KafkaConnectionError(f"no Kafka broker answered at {','.join(self._servers)}") from exc
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
        return self._producer

    async def _stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
