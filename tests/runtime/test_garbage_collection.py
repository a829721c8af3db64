"""The collector settings every service process runs with."""

import gc

import pytest

from mailintake.runtime.garbage_collection import YOUNG_GENERATION_THRESHOLD, tune_for_streaming


@pytest.fixture
def restored_collector():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_start_up_objects_are_frozen_and_young_collections_come_less_often(restored_collector):
    gc.set_threshold(700, 10, 10)
    alive_at_start_up = {"a": [1, 2]}
    assert tune_for_streaming() == (700, 10, 10)
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 0
    # Frozen: no generation holds it, so no collection visits it.
    assert gc.is_tracked(alive_at_start_up)
    assert id(alive_at_start_up) not in {id(o) for o in gc.get_objects()}


def test_cyclic_garbage_made_after_start_up_is_still_collected(restored_collector):
    tune_for_streaming()
    collected = []

    class Node:
        def __init__(self):
            self.other = self

        def __del__(self):
            collected.append(True)

    for _ in range(10):
        Node()
    assert collected == []  # a cycle waits for the collector
    gc.collect()
    assert len(collected) == 10
