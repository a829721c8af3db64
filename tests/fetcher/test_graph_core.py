"""The pure parts of the Graph source: delta pages and rounds, the plan, Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.fetcher.account import Account
from services.fetcher.graph_mailbox import (
    DeltaRound,
    graph_origin,
    message_id_of,
    odata_string,
    parse_delta_page,
    plan_round,
    retry_after_seconds,
    source_id,
)


def page(*entries, next_link=None, delta_link="https://graph.example/d?$deltatoken=x"):
    return {"value": list(entries), "@odata.nextLink": next_link, "@odata.deltaLink": None if next_link else delta_link}


def live(message_id: str, received: str) -> dict:
    return {"@odata.type": "#microsoft.graph.message", "id": message_id, "receivedDateTime": received}


def removed(message_id: str) -> dict:
    return {"@odata.type": "#microsoft.graph.message", "id": message_id, "@removed": {"reason": "deleted"}}


def test_a_round_merges_replays_and_removals_latest_entry_winning():
    delta = DeltaRound(full=False, listed={}, removed=set())
    delta.add(parse_delta_page(page(live("a", "2026-01-01T09:00:02Z"), live("b", "2026-01-01T09:00:01Z"), next_link="n")))
    delta.add(parse_delta_page(page(removed("a"), live("b", "2026-01-01T09:00:01Z"), removed("c"), live("c", "2026-01-01T09:00:03Z"))))
    assert delta.listed == {"b": "2026-01-01T09:00:01Z", "c": "2026-01-01T09:00:03Z"}
    assert delta.removed == {"a"}


def test_the_plan_is_oldest_first_without_what_was_produced():
    delta = DeltaRound(full=False, listed={"n": "2026-01-01T09:00:03Z", "o": "2026-01-01T09:00:01Z",
                                           "same1": "2026-01-01T09:00:02Z", "same2": "2026-01-01T09:00:02Z", "p": "x"},
                       removed={"gone", "never-seen"})
    pending, vanished = plan_round(delta, produced={"p", "gone", "kept"})
    assert pending == ["o", "same1", "same2", "n"]
    assert vanished == {"gone"}, "an incremental round drops only the marks of messages it reports removed"


def test_a_full_round_drops_the_marks_of_everything_it_does_not_list():
    delta = DeltaRound(full=True, listed={"a": "1", "b": "2"}, removed=set())
    assert plan_round(delta, produced={"a", "old1", "old2"}) == (["b"], {"old1", "old2"})


@pytest.mark.parametrize(
    "document, problem",
    [
        ({}, "no 'value' array"),
        ({"value": [{"receivedDateTime": "x"}], "@odata.deltaLink": "d"}, "an entry without an id"),
        ({"value": []}, "neither @odata.nextLink nor @odata.deltaLink"),
    ],
)
def test_an_unreadable_delta_page_is_named(document, problem):
    with pytest.raises(ValueError, match=problem):
        parse_delta_page(document)


def test_retry_after_in_seconds_as_a_date_or_missing():
    assert retry_after_seconds("7", 1) == 7.0
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Sun, 29 Nov 2026 12:00:30 GMT", 1, now) == 30.0
    assert retry_after_seconds("Sun, 29 Nov 2026 11:00:00 GMT", 1, now) == 0.0
    assert [retry_after_seconds(None, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_after_seconds("soon", 2) == 2.0


def test_origin_source_ids_and_odata_strings():
    common = {"id": "g", "name": "g", "protocol": "graph", "username": "desk@example.test",
              "authentication": "oauth2_client_credentials",
              "oauth2": {"tenant": "contoso.example", "client_id": "c", "client_secret": "s"}}
    assert graph_origin(Account(**common, host="graph.microsoft.com", port=443)) == "https://graph.microsoft.com"
    assert graph_origin(Account(**common, host="127.0.0.1", port=4443)) == "https://127.0.0.1:4443"
    assert message_id_of(source_id("AAMk=/x")) == "AAMk=/x"
    with pytest.raises(ValueError):
        message_id_of("ews:AAMk")
    assert odata_string("Bob's") == "'Bob''s'"
