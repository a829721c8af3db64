"""The agent's hand-off of batches to the batch task: one waits, and later ones join it."""

from __future__ import annotations

import asyncio

import pytest

from services.ticketer.batch_handoff import BatchHandoff


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=5))


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_batch_put_is_the_batch_got():
    async def main():
        handoff = BatchHandoff(10)
        getting = asyncio.create_task(handoff.get())
        await _settle()
        assert not getting.done()  # nothing to take yet
        await handoff.put([1, 2, 3])
        return await getting

    assert run(main()) == [1, 2, 3]


def test_batches_put_while_one_waits_join_it_in_order():
    async def main():
        handoff = BatchHandoff(10)
        await handoff.put([1, 2])
        await handoff.put([3])
        await handoff.put([4, 5, 6])
        assert handoff.waiting() == 6
        taken = await handoff.get()
        return taken, handoff.waiting()

    assert run(main()) == ([1, 2, 3, 4, 5, 6], 0)


def test_a_batch_that_would_overfill_the_waiting_one_waits_for_it_to_be_taken():
    async def main():
        handoff = BatchHandoff(4)
        await handoff.put([1, 2, 3])
        putting = asyncio.create_task(handoff.put([4, 5]))
        await _settle()
        assert not putting.done()  # the agent is held: back-pressure
        first = await handoff.get()
        await asyncio.wait_for(putting, 1)
        return first, await handoff.get()

    assert run(main()) == ([1, 2, 3], [4, 5])


def test_a_batch_larger_than_the_limit_goes_alone():
    async def main():
        handoff = BatchHandoff(2)
        await handoff.put([1, 2, 3])
        return await handoff.get()

    assert run(main()) == [1, 2, 3]


def test_the_limit_must_allow_a_record():
    with pytest.raises(ValueError, match="at least 1"):
        BatchHandoff(0)
