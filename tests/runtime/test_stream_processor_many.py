"""A handler of many records (``process_many``): each record still gets its own outputs or
its own dead letter, in order, whether it failed to decode or to process."""

from __future__ import annotations

import pytest
from aiokafka import ConsumerRecord

from mailintake.contracts import InvalidMessage
from mailintake.contracts.records import decode_record
from mailintake.runtime.http_endpoint import Health
from mailintake.runtime.stream_processor import DLQ_TOPIC, DlqLimit, Output, StreamProcessor


def message(offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(
        topic="test.many", partition=0, offset=offset, timestamp=0, timestamp_type=0, key=b"k", value=value,
        headers=[], checksum=None, serialized_key_size=1, serialized_value_size=len(value),
    )


def decode(value: bytes) -> bytes:
    if value.startswith(b"undecodable"):
        raise InvalidMessage("not a record of this topic")
    return value


def in_pairs(records):
    """Takes two records before it yields their two results, as a grouping handler does."""
    taken = []
    for record, _message in records:
        taken.append(record)
        if len(taken) == 2:
            yield from (result(r) for r in taken)
            taken = []
    yield from (result(r) for r in taken)


def result(record: bytes):
    if record.startswith(b"invalid"):
        return InvalidMessage(f"cannot process {record.decode()}")
    return [Output("test.out", record, record.upper())]


def outputs_of(values: list[bytes], **handlers) -> list[Output]:
    """Every output a processor with ``handlers`` makes of records with ``values`` (offsets 0, 1, ...)."""
    processor = StreamProcessor(
        service="many",
        source_topic="test.many",
        group_id="test-many",
        bootstrap_servers="127.0.0.1:1",  # never reached: the clients are made by run() alone
        decode=decode,
        health=Health(),
        dlq_limit=DlqLimit(max_ratio=1.0),
        **handlers,
    )
    return list(processor._outputs([message(n, v) for n, v in enumerate(values)]))


def test_each_record_gets_its_outputs_or_its_dead_letter_in_order():
    values = [b"ok-0", b"undecodable-1", b"ok-2", b"invalid-3", b"ok-4", b"ok-5", b"undecodable-6"]
    outputs = outputs_of(values, process_many=in_pairs)

    produced = [(o.key, o.value) for o in outputs if o.topic == "test.out"]
    assert produced == [(b"ok-0", b"OK-0"), (b"ok-2", b"OK-2"), (b"ok-4", b"OK-4"), (b"ok-5", b"OK-5")]
    letters = [decode_record(DLQ_TOPIC, o.value) for o in outputs if o.topic == DLQ_TOPIC]
    assert [(letter.source_offset, letter.reason) for letter in letters] == [
        (1, "not a record of this topic"),
        (3, "cannot process invalid-3"),
        (6, "not a record of this topic"),
    ]
    assert all(letter.source_topic == "test.many" and letter.service == "many" for letter in letters)


def test_one_record_at_a_time_gives_the_same_outputs():
    values = [b"ok-0", b"undecodable-1", b"invalid-2", b"ok-3"]

    def process(record: bytes, _message):
        found = result(record)
        if isinstance(found, InvalidMessage):
            raise found
        return found

    def outputs(**handler):
        made = outputs_of(values, **handler)
        return sorted(
            (o.topic, o.key, decode_record(DLQ_TOPIC, o.value).reason if o.topic == DLQ_TOPIC else o.value) for o in made
        )

    assert outputs(process=process) == outputs(process_many=in_pairs)


def test_a_handler_that_leaves_records_without_a_result_stops_the_batch():
    def first_only(records):
        for record, _message in records:
            yield result(record)
            return

    def takes_two_answers_one(records):
        iterator = iter(records)
        for (record, _message), _ in zip(iterator, iterator):
            yield result(record)

    def answers_twice(records):
        for record, _message in records:
            yield result(record)
            yield result(record)

    batch = [b"ok-0", b"ok-1"]
    with pytest.raises(RuntimeError, match="more results than it took records"):
        outputs_of(batch, process_many=answers_twice)
    with pytest.raises(RuntimeError, match="stopped before it took every record"):
        outputs_of(batch, process_many=first_only)
    with pytest.raises(RuntimeError, match="no result for 1 records"):
        outputs_of(batch, process_many=takes_two_answers_one)


def test_process_or_process_many_but_not_both():
    for handlers in ({}, {"process": lambda record, message: [], "process_many": in_pairs}):
        with pytest.raises(TypeError, match="either process or process_many"):
            StreamProcessor(
                service="many", source_topic="t", group_id="g", bootstrap_servers="127.0.0.1:1", decode=decode,
                health=Health(), **handlers,
            )
