"""faust 0.15's windowed tables as the bundle join uses them, and the join itself.

The first tests pin faust behaviour the join's design depends on (see bundle_join.py):
if an upgrade changes it, they fail and the design needs another look.
"""

import asyncio
import random
import string
import time
from types import SimpleNamespace

import aiokafka.partitioner
import faust
import pytest
from faust.events import Event
from faust.types.tuples import Message
from faust.windows import TumblingWindow
from kafka.partitioner.default import DefaultPartitioner as KafkaPythonPartitioner

from services.ticketer.bundle_join import BundleJoin, BundleTable, PollCycleWindow, bundle_partition

# Nothing listens here: the tests never start the app, its changelog sends stay queued.
NO_BROKER = "kafka://127.0.0.1:9"


@pytest.fixture(autouse=True)
def event_loop_of_the_thread():
    # faust objects look up the thread's event loop when they first need one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def new_app(name: str) -> faust.App:
    return faust.App(name, broker=NO_BROKER, store="memory://", web_enabled=False, autodiscover=False)


def bundle_table(app: faust.App, partitions: int = 12) -> BundleTable:
    table = app.tables.add(BundleTable(app, name="open-bundles", beacon=app.tables.beacon, partitions=partitions, default=None))
    table.using_window(PollCycleWindow())
    return table


def event_at(app: faust.App, timestamp: float, value: object, partition: int = 0) -> Event:
    message = Message("mail.classified", partition, 1, timestamp, 0, None, b"k", b"v", None)
    return Event(app, b"k", value, {}, message)


def test_poll_cycle_windows_are_one_cycle_wide_and_adjacent():
    window = PollCycleWindow()
    assert window.ranges(18342) == [(18342.0, 18342.9)]
    assert window.current(18342) == (18342.0, 18342.9)
    assert window.current(18341) == (18341.0, 18341.9)
    assert window.delta(18342, 1) == window.current(18341)
    # Only a window whose expires is None keeps faust from its (wall-clock) expiry bookkeeping.
    assert window.expires is None and not window.stale(18342.9, time.time())


def test_faust_expiry_judges_windows_by_the_wall_clock_so_poll_cycles_are_always_stale():
    # faust's cleanup calls window.stale(range_end, time.time()): a window over poll
    # cycles (numbers near 10^4) is far older than any wall-clock "now minus expires".
    window = TumblingWindow(1, expires=7 * 24 * 3600)
    assert window.stale(18342.9, time.time())
    app = new_app("expiry-test")
    table = app.tables.add(BundleTable(app, name="expiring", beacon=app.tables.beacon, partitions=12, default=None))
    table.using_window(window)
    table[("key", window.current(18342))] = {"ticket": 1, "at": time.time()}
    assert len(table.data) == 1
    asyncio.get_event_loop().run_until_complete(table._del_old_keys())
    assert len(table.data) == 0, "faust kept a poll-cycle window; its expiry may now be usable"


def test_faust_windowset_current_and_delta_use_the_message_timestamp_not_relative_to():
    app = new_app("relative-test")
    raw = app.tables.add(BundleTable(app, name="relative", beacon=app.tables.beacon, partitions=12, default=None))
    wrapper = raw.using_window(PollCycleWindow()).relative_to(lambda event: event.value.poll_cycle)
    window = raw.window
    raw.data[("k", window.current(5))] = "poll cycle 5"
    raw.data[("k", window.current(1000))] = "message time 1000"
    raw.data[("k", window.current(999))] = "message time 999"
    event = event_at(app, timestamp=1000.0, value=SimpleNamespace(poll_cycle=5))
    windows = wrapper["k"][event]
    assert windows.value() == "poll cycle 5"  # the relative_to handler
    assert windows.current() == "message time 1000"  # ignores it
    assert windows.delta(1) == "message time 999"  # ignores it too


def test_join_finds_the_opener_in_the_same_and_the_next_cycle_only():
    join = BundleJoin(bundle_table(new_app("join-test")), retention_seconds=3600)
    join.remember("bundle", 41, 10001)
    assert [join.lookup("bundle", cycle) for cycle in (40, 41, 42, 43)] == [None, 10001, 10001, None]
    assert join.lookup("other bundle", 41) is None


def test_join_prefers_the_earlier_window_when_both_hold_a_ticket():
    join = BundleJoin(bundle_table(new_app("order-test")), retention_seconds=3600)
    join.remember("bundle", 42, 10002)
    join.remember("bundle", 41, 10001)
    assert join.lookup("bundle", 42) == 10001


def test_prune_drops_entries_older_than_the_retention():
    table = bundle_table(new_app("prune-test"))
    join = BundleJoin(table, retention_seconds=100)
    join.remember("old", 1, 10001, now=1000.0)
    join.remember("new", 1, 10002, now=1090.0)
    assert join.prune(now=1050.0) == 0
    assert join.prune(now=1150.0) == 1
    assert (join.lookup("old", 1), join.lookup("new", 1)) == (None, 10002)


def test_changelog_partition_is_the_bundle_keys_source_partition_whatever_event_is_current():
    table = bundle_table(new_app("partition-test"))
    window = table.window
    for key in ('["a","x@example.com","Printer"]', '["b","y@example.com","VPN"]'):
        assert table.partition_for_key((key, window.current(7))) == bundle_partition(key, 12)


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_bundle_partition_agrees_with_the_kafka_clients_default_partitioners(partitions):
    rng = random.Random(partitions)
    all_partitions = list(range(partitions))
    aiokafka_partitioner = aiokafka.partitioner.DefaultPartitioner()
    cluster = SimpleNamespace(
        topics=lambda: {"t"},
        partitions_for_topic=lambda topic: set(all_partitions),
        available_partitions_for_topic=lambda topic: set(all_partitions),
    )
    for _ in range(500):
        key = "".join(rng.choice(string.printable + "äöüß€") for _ in range(rng.randint(1, 80)))
        data = key.encode("utf-8")
        expected = bundle_partition(key, partitions)
        assert KafkaPythonPartitioner().partition("t", key, data, None, None, cluster) == expected
        assert aiokafka_partitioner(data, all_partitions, all_partitions) == expected


def test_a_remembered_entry_is_a_changelog_record_that_faust_recovery_reads_back():
    app = new_app("changelog-test")
    join = BundleJoin(bundle_table(app), retention_seconds=3600)
    key = '["acct","x@example.com","Printer"]'
    record = join.remember(key, 41, 10001, now=1234.5)
    table = join._table
    assert record.topic == table.changelog_topic.get_topic_name()
    assert record.partition == bundle_partition(key, 12)
    # faust's recovery: the changelog consumer decodes with the table's codecs, the store
    # turns the JSON lists back into the tuple key.
    decoded_key = faust.serializers.codecs.loads(table.key_serializer, record.key)
    decoded_value = faust.serializers.codecs.loads(table.value_serializer, record.value)
    recovered = bundle_table(new_app("changelog-recovered"))
    message = Message(record.topic, record.partition, 1, 0.0, 0, None, record.key, record.value, None)
    recovered.apply_changelog_batch([Event(app, decoded_key, decoded_value, {}, message)])
    assert BundleJoin(recovered, retention_seconds=3600).lookup(key, 42) == 10001
    assert BundleJoin(recovered, retention_seconds=3600).lookup(key, 43) is None
    assert decoded_value == {"ticket": 10001, "at": 1234.5}
