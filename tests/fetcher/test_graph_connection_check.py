"""The connection check of Graph accounts against the Graph stub: token, connect, tls,
authentication, folder, each with the exact reply on failure."""

from __future__ import annotations

import json

import pytest

from services.fetcher.connection_check import StepOutcome, check_account
from services.fetcher.mail_source import StepFailed
from tests.fetcher.graph_peer import StubIssuedTokens, graph_account, start_graph_stub

pytestmark = pytest.mark.stack

DESK = "desk@example.test"


@pytest.fixture
def graph_stub(stack):
    stub = start_graph_stub(stack)
    box = stub.tenant.add_mailbox(DESK)
    box.deliver(b"Subject: one\r\n\r\nx\r\n")
    box.add_folder("Processed")
    yield stub
    stub.stop()


def outcomes(report) -> list[tuple[str, StepOutcome]]:
    return [(step.name, step.outcome) for step in report.steps]


def test_a_working_account_passes_every_step_and_never_shows_its_token(stack, unique, graph_stub):
    tokens = StubIssuedTokens(graph_stub.tokens, "mailintake-app")
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK, after_fetch="move:Processed")
    report = check_account(account, timeout=10, bearer_tokens=lambda _: tokens)
    assert report.ok, report
    assert outcomes(report) == [(n, StepOutcome.OK) for n in ("token", "connect", "tls", "authentication", "folder")]
    assert report.messages == 1
    assert report.steps[-1].detail == "INBOX: 1 messages (totalItemCount); move target 'Processed' exists"
    assert tokens.current not in report.model_dump_json()
    assert "not-used-by-the-stub" not in report.model_dump_json()


def test_a_token_failure_shows_the_identity_providers_words_and_stops_the_check(stack, unique, graph_stub):
    refusal = "AADSTS7000215: Invalid client secret provided."

    class Refused:
        def token(self) -> str:
            raise StepFailed("token", refusal, "the identity provider refused the client credentials")

        refresh = token

    report = check_account(graph_account(stack, graph_stub, f"graph-{unique}", DESK), timeout=10, bearer_tokens=lambda _: Refused())
    assert outcomes(report) == [("token", StepOutcome.FAILED)]
    assert report.steps[0].server_reply == refusal
    assert graph_stub.requests == []


def test_a_mailbox_the_token_may_not_open_fails_authentication_with_the_servers_reply(stack, unique, graph_stub):
    tokens = StubIssuedTokens(graph_stub.tokens, "max@example.test", app_only=False)
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK)
    report = check_account(account, timeout=10, bearer_tokens=lambda _: tokens)
    assert outcomes(report)[-1] == ("authentication", StepOutcome.FAILED)
    failed = report.failure
    assert failed.server_reply.startswith("HTTP 403 Forbidden: ")
    assert json.loads(failed.server_reply.removeprefix("HTTP 403 Forbidden: "))["error"]["code"] == "ErrorAccessDenied"


def test_a_certificate_from_another_ca_fails_at_tls(stack, unique, graph_stub, untrusted_ca_file):
    tokens = StubIssuedTokens(graph_stub.tokens, "mailintake-app")
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK, ca_file=untrusted_ca_file)
    report = check_account(account, timeout=10, bearer_tokens=lambda _: tokens)
    assert outcomes(report) == [("token", StepOutcome.OK), ("connect", StepOutcome.OK), ("tls", StepOutcome.FAILED)]
    assert "certificate verify failed" in report.failure.detail


def test_a_missing_folder_fails_at_folder(stack, unique, graph_stub):
    tokens = StubIssuedTokens(graph_stub.tokens, "mailintake-app")
    account = graph_account(stack, graph_stub, f"graph-{unique}", DESK, folder="Inbox/Nope")
    report = check_account(account, timeout=10, bearer_tokens=lambda _: tokens)
    assert outcomes(report)[-1] == ("folder", StepOutcome.FAILED)
    assert report.failure.detail == "no folder named 'Nope' in its parent folder (folder path 'Inbox/Nope')"


def test_by_default_the_token_layer_asks_the_accounts_authority(stack, unique, graph_stub, untrusted_ca_file):
    # The test accounts name https://localhost/ as their authority, where nothing answers.
    report = check_account(graph_account(stack, graph_stub, f"graph-{unique}", DESK), timeout=10)
    assert outcomes(report) == [("token", StepOutcome.FAILED)]
    assert graph_stub.requests == []
