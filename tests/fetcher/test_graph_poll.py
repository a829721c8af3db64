"""Microsoft Graph through the fetcher's poll into Kafka, with the delta state in PostgreSQL.

The stack provides Kafka, PostgreSQL and the CA; the mail server is the Graph stub.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from mailintake.database import engine_for
from services.fetcher.core import message_id_of
from services.fetcher.graph_delta_store import GraphDeltaStore
from services.fetcher.graph_mailbox import GraphMailbox
from services.fetcher.mail_source import StepFailed
from services.fetcher.tables import GraphDeltaLink, GraphProducedMessage
from tests.fetcher.graph_peer import StubIssuedTokens, graph_account, mime, start_graph_stub
from tests.peers.graph_stub import received_sequence

pytestmark = pytest.mark.stack

DESK = "desk@example.test"


@pytest.fixture
def graph_stub(stack):
    stub = start_graph_stub(stack)
    stub.tenant.add_mailbox(DESK, "Help desk")
    yield stub
    stub.stop()


@pytest.fixture
def app_tokens(graph_stub):
    return StubIssuedTokens(graph_stub.tokens, "mailintake-app", app_only=True)


def stored_marks(stack, account_id: str) -> set[str]:
    with engine_for(stack.database_url).connect() as connection:
        return set(connection.scalars(select(GraphProducedMessage.message_id).where(GraphProducedMessage.account_id == account_id)))


def stored_delta_link(stack, account_id: str) -> str | None:
    with engine_for(stack.database_url).connect() as connection:
        return connection.scalar(select(GraphDeltaLink.delta_link).where(GraphDeltaLink.account_id == account_id))


def delta_requests(stub) -> list[dict[str, list[str]]]:
    """The query of every delta request the stub answered, in order."""
    return [parse_qs(urlsplit(r.path).query) for r in stub.requests if "/messages/delta" in urlsplit(r.path).path]


def deliver(stub, tag: str, count: int, mailbox: str = DESK, folder=None) -> tuple[list[bytes], list[str]]:
    box = stub.tenant.mailbox(mailbox)
    sent = [mime(tag, n) for n in range(count)]
    # Delivered newest first, so only sorting by receivedDateTime gives the right order.
    when = received_sequence(count)
    ids = [box.deliver(raw, folder, received=received) for raw, received in reversed(list(zip(sent, when)))][::-1]
    return sent, ids


def test_pages_of_a_delta_round_are_produced_once_oldest_first_and_marked_read(
    stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw
):
    sent, ids = deliver(graph_stub, unique, 230)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    fetcher = fetcher_for(account, bearer_tokens=lambda _: app_tokens)

    assert fetcher.poll(account) == 230
    records = mail_raw.records(account.id)
    assert [r.raw for r in records] == sent, "the $value bytes exactly, oldest receivedDateTime first"
    assert [r.source_id for r in records] == [f"graph:{i}" for i in ids]
    assert [r.message_id for r in records] == [message_id_of(raw) for raw in sent]
    assert {r.protocol.value for r in records} == {"GRAPH"}
    first_round = delta_requests(graph_stub)
    assert len(first_round) == 3, "230 messages at 100 a page"
    assert "$deltatoken" not in first_round[0] and all("$skiptoken" in q for q in first_round[1:])
    assert all(m.is_read for m in graph_stub.tenant.mailbox(DESK).messages.values())
    assert stored_marks(stack, account.id) == set(ids)
    assert "$deltatoken=" in stored_delta_link(stack, account.id)

    # The next round reports our own isRead updates; they were produced already.
    assert fetcher.poll(account) == 0
    assert "$deltatoken" in delta_requests(graph_stub)[3]
    assert len(mail_raw.records(account.id)) == 230


def test_a_restarted_fetcher_continues_from_the_stored_delta_link(
    stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw
):
    deliver(graph_stub, unique, 3)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    assert fetcher_for(account, bearer_tokens=lambda _: app_tokens).poll(account) == 3
    later, later_ids = deliver(graph_stub, f"{unique}-later", 2)
    asked_before = len(delta_requests(graph_stub))

    restarted = fetcher_for(account, bearer_tokens=lambda _: app_tokens)
    assert restarted.poll(account) == 2
    assert "$deltatoken" in delta_requests(graph_stub)[asked_before], "the restart asked for changes, not the whole folder"
    records = mail_raw.records(account.id)
    assert [r.raw for r in records[3:]] == later
    assert len({r.source_id for r in records}) == 5


@pytest.mark.parametrize("after_fetch", ["delete", "move:Processed", "move:Inbox/Done", "move:archive"])
def test_after_fetch_actions(stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw, after_fetch):
    box = graph_stub.tenant.mailbox(DESK)
    processed = box.add_folder("Processed")
    done = box.add_folder("Done", box.inbox)
    sent, ids = deliver(graph_stub, unique, 4)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK, after_fetch=after_fetch)
    fetcher = fetcher_for(account, bearer_tokens=lambda _: app_tokens)

    assert fetcher.poll(account) == 4
    assert box.in_folder(box.inbox.id) == []
    if after_fetch == "delete":
        assert sorted(m.mime for m in box.recoverable_items) == sorted(sent)
    else:
        target = {"move:Processed": processed, "move:Inbox/Done": done, "move:archive": box.well_known("archive")}[after_fetch]
        assert sorted(m.mime for m in box.in_folder(target.id)) == sorted(sent)
    assert {a.kind for a in graph_stub.actions} == {"delete" if after_fetch == "delete" else "move"}
    # The next round reports the messages as removed: their marks go, nothing is produced again.
    assert fetcher.poll(account) == 0
    assert stored_marks(stack, account.id) == set()
    assert len(mail_raw.records(account.id)) == 4


def test_a_folder_recreated_under_the_same_name_starts_a_full_round(stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw):
    box = graph_stub.tenant.mailbox(DESK)
    old = box.add_folder("Tickets")
    first, first_ids = deliver(graph_stub, unique, 2, folder=old)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK, folder="Tickets")
    fetcher = fetcher_for(account, bearer_tokens=lambda _: app_tokens)
    assert fetcher.poll(account) == 2

    old.display_name = "Tickets (old)"
    new = box.add_folder("Tickets")
    later, later_ids = deliver(graph_stub, f"{unique}-new", 3, folder=new)
    asked_before = len(delta_requests(graph_stub))
    assert fetcher.poll(account) == 3
    assert "$deltatoken" not in delta_requests(graph_stub)[asked_before], "the old folder's link was not used"
    assert [r.raw for r in mail_raw.records(account.id)] == first + later
    assert stored_marks(stack, account.id) == set(later_ids), "the old folder's marks went with the full round"


def test_a_move_target_that_does_not_exist_fails_before_anything_is_produced(
    stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw
):
    deliver(graph_stub, unique, 2)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK, after_fetch="move:Nowhere")
    with pytest.raises(StepFailed) as failure:
        fetcher_for(account, bearer_tokens=lambda _: app_tokens).poll(account)
    assert failure.value.step == "folder"
    assert "no folder named 'Nowhere'" in failure.value.message
    assert mail_raw.records(account.id) == []


def test_a_shared_mailbox_is_read_by_its_address_with_the_delegates_token(
    stack, unique, graph_stub, fetcher_for, mail_raw
):
    shared = f"shared-{unique}@example.test"
    graph_stub.tenant.add_mailbox(shared, "Shared desk")
    graph_stub.tenant.add_mailbox("max@example.test", "Max")
    sent, _ = deliver(graph_stub, unique, 2, mailbox=shared)
    max_tokens = StubIssuedTokens(graph_stub.tokens, "max@example.test", app_only=False)
    account = graph_account(stack, graph_stub, f"graph-{unique}", shared, authentication="oauth2_refresh_token",
                            oauth2={"provider": "oidc", "authority": "https://localhost/", "client_id": "c",
                                    "refresh_token": "r"})
    fetcher = fetcher_for(account, bearer_tokens=lambda _: max_tokens)

    with pytest.raises(StepFailed) as refused:
        fetcher.poll(account)
    assert refused.value.step == "folder"
    reply = json.loads(refused.value.server_reply.split(": ", 1)[1])
    assert reply["error"]["code"] == "ErrorAccessDenied"
    assert reply["error"]["message"] == "Access is denied. Check credentials and try again."
    assert refused.value.server_reply.startswith("HTTP 403 Forbidden: ")

    graph_stub.tenant.grant_delegate("max@example.test", shared)
    assert fetcher.poll(account) == 2
    assert [r.raw for r in mail_raw.records(account.id)] == sent
    assert {r.principal for r in graph_stub.requests} == {"max@example.test"}
    assert all(f"/users/{shared}/" in r.path for r in graph_stub.requests)


def test_throttling_is_waited_out_as_retry_after_says(stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw):
    sent, _ = deliver(graph_stub, unique, 3)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    # Past the folder lookup and the first page: the fetch of a message is throttled twice.
    graph_stub.throttle(2, retry_after="1", after=2)
    graph_stub.throttle(1, retry_after=None, status=503)

    # One request at a time, so the request after a 429 is its retry.
    fetcher = fetcher_for(account, bearer_tokens=lambda _: app_tokens, graph_requests_per_mailbox=1)
    assert fetcher.poll(account) == 3
    assert [r.raw for r in mail_raw.records(account.id)] == sent
    answered = graph_stub.requests
    throttled = [n for n, r in enumerate(answered) if r.status in (429, 503)]
    assert [answered[n].status for n in throttled] == [429, 429, 503]
    for n in throttled[:2]:
        assert answered[n + 1].at - answered[n].at >= 0.95, "Retry-After: 1 was not waited out"
    assert REGISTRY.get_sample_value("mailintake_fetcher_graph_throttled_total", {"account_id": account.id}) == 3


def test_throttling_beyond_the_limit_fails_the_poll_with_the_servers_reply(
    stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw
):
    deliver(graph_stub, unique, 2)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    # One request at a time, so the six 429s land on one request.
    fetcher = fetcher_for(account, bearer_tokens=lambda _: app_tokens, graph_requests_per_mailbox=1)

    graph_stub.throttle(1, retry_after="600")
    with pytest.raises(StepFailed) as too_long:
        fetcher.poll(account)
    assert too_long.value.step == "folder"
    assert "asks to wait 600 s" in too_long.value.explanation
    assert '"code": "ApplicationThrottled"' in too_long.value.server_reply

    graph_stub.throttle(6, retry_after="0", after=2)
    with pytest.raises(StepFailed) as too_often:
        fetcher.poll(account)
    assert too_often.value.step == "fetch"
    assert "6 times in a row" in too_often.value.explanation
    assert too_often.value.server_reply.startswith("HTTP 429 Too Many Requests: ")
    assert mail_raw.records(account.id) == []

    assert fetcher.poll(account) == 2, "the next poll goes on where it stopped"


def test_an_expired_token_is_refreshed_once_and_the_request_repeated(
    stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw
):
    deliver(graph_stub, unique, 2)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    fetcher = fetcher_for(account, bearer_tokens=lambda _: app_tokens)
    graph_stub.tokens.expire(app_tokens.token())

    assert fetcher.poll(account) == 2
    assert app_tokens.refreshes == 1
    assert [r.status for r in graph_stub.requests][:2] == [401, 200]


def test_a_token_refused_under_four_requests_in_flight_is_refreshed_once(
    stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw
):
    sent, _ = deliver(graph_stub, unique, 40)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    graph_stub.latency = 0.01

    def expire_once(action) -> None:
        if len(graph_stub.actions) == 10:
            graph_stub.tokens.expire(app_tokens.current)

    graph_stub.before_action = expire_once
    assert fetcher_for(account, bearer_tokens=lambda _: app_tokens).poll(account) == 40
    assert app_tokens.refreshes == 1
    assert sum(r.status == 401 for r in graph_stub.requests) >= 1
    assert [r.raw for r in mail_raw.records(account.id)] == sent


def test_a_refreshed_token_that_is_refused_too_fails_loudly_with_the_servers_reply(
    stack, unique, graph_stub, fetcher_for
):
    class ExpiredTokens:
        """A token layer that hands out expired tokens, fresh or not."""

        refreshes = 0

        def token(self) -> str:
            token = graph_stub.tokens.issue("mailintake-app", app_only=True)
            graph_stub.tokens.expire(token)
            return token

        def refresh(self) -> str:
            self.refreshes += 1
            return self.token()

    tokens = ExpiredTokens()
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    with pytest.raises(StepFailed) as failure:
        fetcher_for(account, bearer_tokens=lambda _: tokens).poll(account)
    assert failure.value.step == "authentication"
    assert tokens.refreshes == 1
    reply = json.loads(failure.value.server_reply.split(": ", 1)[1])
    assert reply["error"] | {"innerError": None} == {
        "code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid.", "innerError": None
    }
    assert failure.value.explanation == "the server refused a freshly issued access token"


@pytest.mark.parametrize("after_fetch", ["mark_seen", "delete"])
def test_an_expired_delta_token_resyncs_the_folder_without_duplicates(
    stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw, after_fetch
):
    first, first_ids = deliver(graph_stub, unique, 5)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK, after_fetch=after_fetch)
    fetcher = fetcher_for(account, bearer_tokens=lambda _: app_tokens)
    assert fetcher.poll(account) == 5

    graph_stub.tenant.expire_delta_tokens()
    later, later_ids = deliver(graph_stub, f"{unique}-later", 2)
    asked_before = len(graph_stub.requests)
    assert fetcher.poll(account) == 2
    statuses = [(r.status, "$deltatoken" in r.path) for r in graph_stub.requests[asked_before:] if "/delta" in r.path]
    assert statuses[:2] == [(410, True), (200, False)], "the rejected link, then the initial query"
    assert REGISTRY.get_sample_value("mailintake_fetcher_graph_resyncs_total", {"account_id": account.id}) == 1
    records = mail_raw.records(account.id)
    assert [r.raw for r in records] == first + later
    assert stored_marks(stack, account.id) == set(later_ids if after_fetch == "delete" else first_ids + later_ids)


def test_a_poll_that_fails_mid_round_keeps_the_old_delta_link_and_the_next_produces_the_rest_once(
    stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw
):
    sent, ids = deliver(graph_stub, unique, 30)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    fetcher = fetcher_for(account, bearer_tokens=lambda _: app_tokens, fetch_chunk=10, graph_requests_per_mailbox=1)
    # Past the folder, the one delta page, both chunks' fetches and five marks: the sixth mark is throttled for good.
    graph_stub.throttle(6, retry_after="0", after=2 + 10 + 10 + 5)
    with pytest.raises(StepFailed) as failure:
        fetcher.poll(account)
    assert failure.value.step == "after_fetch"
    assert stored_delta_link(stack, account.id) is None, "the round was not complete"
    produced = {r.source_id for r in mail_raw.records(account.id)}
    acted = {f"graph:{a.message_id}" for a in graph_stub.actions}
    assert len(acted) == 5 and acted <= produced

    marked = stored_marks(stack, account.id)
    assert fetcher.poll(account) == 30 - len(marked), "the round again, minus what was marked"
    assert {r.source_id for r in mail_raw.records(account.id)} == {f"graph:{i}" for i in ids}
    assert all(m.is_read for m in graph_stub.tenant.mailbox(DESK).messages.values())
    assert stored_delta_link(stack, account.id) is not None
    assert fetcher.poll(account) == 0


def test_up_to_four_requests_per_mailbox_are_in_flight_at_once(stack, unique, graph_stub, app_tokens, fetcher_for, mail_raw):
    sent, _ = deliver(graph_stub, unique, 40)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    graph_stub.latency = 0.02
    assert fetcher_for(account, bearer_tokens=lambda _: app_tokens).poll(account) == 40
    assert graph_stub.max_in_flight == 4
    assert [r.raw for r in mail_raw.records(account.id)] == sent, "still in order"


def test_an_unknown_mailbox_fails_with_the_servers_exact_error(stack, unique, graph_stub, app_tokens):
    account = graph_account(stack, graph_stub, f"graph-{unique}", "nobody@example.test")
    mailbox = GraphMailbox(account, app_tokens, GraphDeltaStore(engine_for(stack.database_url)), 10.0)
    with pytest.raises(StepFailed) as failure:
        mailbox.open()
    assert failure.value.step == "folder"
    body = json.loads(failure.value.server_reply.removeprefix("HTTP 404 Not Found: "))
    assert body["error"]["code"] == "ErrorInvalidUser"
    assert body["error"]["message"] == "The requested user 'nobody@example.test' is invalid."


def test_a_link_to_another_origin_is_not_followed_with_the_token(stack, unique, graph_stub, app_tokens):
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    mailbox = GraphMailbox(account, app_tokens, GraphDeltaStore(engine_for(stack.database_url)), 10.0)
    with pytest.raises(StepFailed) as failure:
        mailbox.session.request("list", "GET", "https://attacker.example/v1.0/users")
    assert "not sent there" in failure.value.message
    mailbox.close()
