"""How the ticketer's faust consumer hands each fetched record to the streams.

faust 0.15.3's drain loop (``faust/transport/consumer.py``, ``Consumer._drain_messages``)
delivers every record with ``await self.wait_first(callback(record), suspend_flow.wait())``:
per record that makes four tasks (the callback, the flow event, the consumer's stopped
and crashed events), an ``asyncio.wait`` and three cancellations. The callback almost
always finishes at once (it puts the record into the stream's buffer), so those tasks are
pure cost: 9.5 % of the ticketer's samples directly in a profile under a sustained load,
and the ticketer used 16-18 % less CPU a mail without them (BENCHMARKS.md, "2026-12-01
(night)" and "2026-12-02 (midday)").

:func:`deliver` runs the callback's first step right away in the caller; only when the
callback suspends (the stream's buffer is full, back-pressure) does it race the rest of
the callback against the interrupting events, exactly as faust does. Nothing changes in
what is delivered or in what can interrupt it: ``wait_first`` also runs the callback's
first step before it can notice any of the events (its tasks all start in the same loop
iteration), and a callback that finished in its first step is not undone by an event
that is set.

:class:`InlineDeliveryConsumer` is faust's aiokafka consumer with its drain loop
restated around :func:`deliver`; the rest of the loop (read offsets, gaps of acked
topics, commit every N acks, how it stops) is faust's, unchanged, but for one thing: it
yields to the event loop after every record, where faust yields every hundredth.
``wait_first`` gives the loop turns for every record, so under faust the agent takes
each record from the buffer about as soon as it is put there. A first version of this module
kept faust's hundred and so filled the buffer a hundred records ahead of the agent; a
rebalance soon after a start then dropped what was buffered (faust skips events of an
earlier generation, the ticketer drops batches taken before the latest rebalance) past
faust's read offset, and the ticketer had to fetch those records again
(``partition_progress.py``): 19 such holes at the 11 starts of
``tests/ticketer/test_crash_safety.py``, against 1 with this yield and 1 with faust's own
loop (one run each, BENCHMARKS.md, "2026-12-02 (midday)").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver

_STARTED = object()


class _Resumption:
    """The rest of a coroutine whose first step ran and suspended on ``waiting_for``.

    Awaiting it (in a task) first hands ``waiting_for`` to the task, as the coroutine's
    own ``await`` would have, then forwards every value, exception and close to the
    coroutine, so a task that runs it is indistinguishable from a task that ran the
    coroutine from the start: cancelling the task cancels the coroutine where it waits.
    """

    __slots__ = ("_coro", "_waiting_for")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_for: Any) -> None:
        self._coro = coro
        self._waiting_for = waiting_for

    def __await__(self) -> Generator[Any, Any, Any]:
        return self  # type: ignore[return-value]

    def __iter__(self) -> _Resumption:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        if self._waiting_for is not _STARTED:
            waiting_for, self._waiting_for = self._waiting_for, _STARTED
            return waiting_for
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._waiting_for = _STARTED
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._waiting_for = _STARTED
        self._coro.close()


async def deliver(
    callback: Coroutine[Any, Any, Any],
    race: Callable[[Awaitable[Any]], Awaitable[Any]],
) -> None:
    """Runs ``callback``; if it suspends, awaits ``race(rest of callback)`` instead.

    ``race`` is what faust would have awaited with the whole callback (its
    ``wait_first`` against the flow event); it sees the callback only from the point
    where the callback first waits. An exception of the callback's first step is raised
    here, as ``wait_first`` raises it.
    """
    try:
        waiting_for = callback.send(None)
    except StopIteration:
        return
    await race(_Resumption(callback, waiting_for))


class InlineDeliveryConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer, delivering each record through :func:`deliver`."""

    def _race_suspend_flow(self, rest: Awaitable[Any]) -> Awaitable[Any]:
        return self.wait_first(rest, self.suspend_flow.wait())

    async def _drain_messages(self, fetcher: Any) -> None:
        callback = self.callback
        race = self._race_suspend_flow
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in records:
                    offset = message.offset
                    last_read = read_offset[tp]
                    if last_read is not None and offset < last_read:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                        continue
                    if last_read and offset - last_read > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last_read + 1, offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await deliver(callback(message), race)
                    read_offset[tp] = offset
                    await asyncio.sleep(0)
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class InlineDeliveryTransport(aiokafka_driver.Transport):
    """faust's aiokafka transport with :class:`InlineDeliveryConsumer`."""

    Consumer = InlineDeliveryConsumer


class InlineDeliveryApp(faust.App):
    """A faust app whose consumer delivers records through :func:`deliver`."""

    def _new_transport(self) -> InlineDeliveryTransport:
        return InlineDeliveryTransport(self.conf.broker_consumer, self)
