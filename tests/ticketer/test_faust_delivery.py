"""Delivering a fetched record to faust's streams: inline while the callback does not wait,
through faust's race against the flow event when it does, and the same records either way."""

from __future__ import annotations

import asyncio

import pytest
from kafka import KafkaProducer
from mode import Service

from services.ticketer.faust_delivery import InlineDeliveryApp, InlineDeliveryConsumer, deliver
from tests.kafka_topics import topics_for_one_test
from tests.ticketer.running_ticketer import delete_group_and_topics


async def _race_through_a_task(rest):
    """Awaits ``rest`` in a task of its own, as faust's ``wait_first`` does."""
    return await asyncio.ensure_future(rest)


def test_a_callback_that_does_not_wait_runs_in_the_callers_task_without_the_race():
    raced = []
    ran_in = []

    async def callback():
        ran_in.append(asyncio.current_task())

    async def main():
        await deliver(callback(), lambda rest: raced.append(rest))
        return asyncio.current_task()

    caller = asyncio.run(main())
    assert ran_in == [caller] and raced == []


def test_a_callback_that_waits_finishes_through_the_race_with_what_it_was_sent():
    seen = []

    async def callback(first, second):
        seen.append(await first)
        await asyncio.sleep(0)
        seen.append(await second)
        return "done"

    async def main():
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        loop.call_later(0.01, first.set_result, "one")
        loop.call_later(0.02, second.set_result, "two")
        results = []

        async def race(rest):
            results.append(await _race_through_a_task(rest))

        await deliver(callback(first, second), race)
        return results

    assert asyncio.run(main()) == ["done"]
    assert seen == ["one", "two"]


async def _fails_at_once():
    raise LookupError("no stream for this partition")


async def _fails_after_waiting():
    await asyncio.sleep(0.01)
    raise LookupError("late")


@pytest.mark.parametrize("callback", [_fails_at_once, _fails_after_waiting], ids=["in the first step", "after waiting"])
def test_an_error_of_the_callback_is_raised_to_the_caller(callback):
    async def main():
        await deliver(callback(), _race_through_a_task)

    with pytest.raises(LookupError, match="no stream" if callback is _fails_at_once else "late"):
        asyncio.run(main())


def test_a_callback_waiting_on_a_full_buffer_is_cancelled_where_it_waits_when_the_flow_is_suspended():
    """faust's own race: ``wait_first`` of a mode service against the flow event."""
    outcome = []

    async def callback(buffer: asyncio.Queue):
        try:
            await buffer.put("record")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("delivered")

    async def main():
        buffer: asyncio.Queue = asyncio.Queue(maxsize=1)
        buffer.put_nowait("earlier record")
        service, suspend_flow = Service(), asyncio.Event()
        asyncio.get_running_loop().call_later(0.01, suspend_flow.set)
        await deliver(callback(buffer), lambda rest: service.wait_first(rest, suspend_flow.wait()))
        await asyncio.sleep(0)
        return [buffer.get_nowait() for _ in range(buffer.qsize())], len(buffer._putters)

    items, putters_left = asyncio.run(main())
    assert outcome == ["cancelled"]
    assert items == ["earlier record"] and putters_left == 0


def test_a_rest_cancelled_before_its_task_ran_cancels_the_callback_where_it_waits():
    outcome = []

    async def callback(never):
        try:
            await never
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async def main():
        never = asyncio.get_running_loop().create_future()

        async def race(rest):
            task = asyncio.ensure_future(rest)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        await deliver(callback(never), race)

    asyncio.run(main())
    assert outcome == ["cancelled"]


class _CountingConsumer(InlineDeliveryConsumer):
    raced = 0

    def _race_suspend_flow(self, rest):
        type(self).raced += 1
        return super()._race_suspend_flow(rest)


class _CountingApp(InlineDeliveryApp):
    def _new_transport(self):
        transport = super()._new_transport()
        transport.Consumer = _CountingConsumer
        return transport


def _numbers_through_an_app(bootstrap, unique, datadir, count, app_type, take, settle=0.0, **app_options):
    """Produces the numbers 0 to ``count - 1`` to a topic of the test's own, then runs an
    ``app_type`` app whose agent awaits ``take(stream)`` after each number it receives,
    until all have arrived and ``settle`` seconds more have passed. The numbers in the
    order received, and the app's consumer."""
    topic, group = f"delivery-{unique}", f"delivery-{unique}-group"
    with topics_for_one_test(bootstrap, topic):
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        for n in range(count):
            producer.send(topic, str(n).encode())
        producer.flush()
        producer.close()

        async def main():
            app = app_type(
                group, datadir=str(datadir), broker=f"kafka://{bootstrap}", store="memory://", web_enabled=False,
                autodiscover=False, consumer_auto_offset_reset="earliest",
                topic_replication_factor=1, key_serializer="raw", value_serializer="raw", **app_options,
            )
            received: list[int] = []
            all_received = asyncio.Event()

            async def agent(stream):
                async for value in stream:
                    received.append(int(value))
                    await take(stream)
                    if len(received) >= count:
                        all_received.set()

            app.agent(app.topic(topic, value_serializer="raw"), name=f"{group}.agent")(agent)
            await app.start()
            try:
                await asyncio.wait_for(all_received.wait(), 120)
                await asyncio.sleep(settle)
            finally:
                await app.stop()
            return received, app.consumer

        try:
            return asyncio.run(main())
        finally:
            delete_group_and_topics(bootstrap, group)


@pytest.mark.stack
def test_a_faust_app_gets_every_record_once_and_in_order_also_when_its_stream_buffer_is_full(stack, unique, tmp_path):
    """A stream buffer of one record and a slow agent: most records wait for room in the
    buffer, so they take the race; none is lost or repeated."""

    async def slowly(stream):
        await asyncio.sleep(0.005)

    count = 60
    # A repeated record would arrive in the half second after the last.
    received, consumer = _numbers_through_an_app(
        stack.kafka_bootstrap, unique, tmp_path, count, _CountingApp, slowly, settle=0.5, stream_buffer_maxsize=1
    )
    assert isinstance(consumer, InlineDeliveryConsumer)
    assert received == list(range(count))
    assert _CountingConsumer.raced > 0


@pytest.mark.stack
def test_the_agent_takes_each_record_before_the_next_is_delivered(stack, unique, tmp_path):
    """The drain loop yields to the event loop after every record, as faust's per-record
    tasks do: a backlog fetched at once does not pile up in the stream's buffer ahead of
    the agent (a rebalance would drop what was piled up, and the ticketer fetch it again)."""
    waiting: list[int] = []

    async def note_waiting(stream):
        waiting.append(stream.channel.queue.qsize())

    count = 300
    received, _ = _numbers_through_an_app(stack.kafka_bootstrap, unique, tmp_path, count, InlineDeliveryApp, note_waiting)
    assert received == list(range(count))
    assert max(waiting) <= 1, f"up to {max(waiting)} records waited in the stream's buffer"
