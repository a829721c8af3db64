"""Garbage-collector settings for the long-running service processes.

CPython runs a young-generation collection after every 700 net container allocations,
and each one also visits the objects it promotes; a stream processor allocates that many
in a handful of records (a decoded record is dozens of dicts, lists and models). Measured
on this project's records: validating a ``mail.classified`` record into its model cost
~40 us with the default threshold and ~12 us with collection off, the difference being
collections. Start-up objects (modules, schemas, the faust app) live as long as the
process, so they are frozen out of every collection, and the young generation is
collected after :data:`YOUNG_GENERATION_THRESHOLD` allocations instead of 700. Cyclic
garbage still goes: only later, by at most that many young objects.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 20_000
"""Net container allocations between young-generation collections (CPython's default: 700)."""


def tune_for_streaming() -> tuple[int, int, int]:
    """Freeze the objects alive now out of future collections and raise the young
    generation's threshold; return the thresholds before, for a caller that restores them."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, before[1], before[2])
    return before
