"""Graph accounts with the real OAuth2 token layer: the fetcher gets its tokens from the
stack's OpenID Connect provider, and the Graph stub introspects them there."""

from __future__ import annotations

import json
import ssl

import httpx
import pytest

from services.fetcher.connection_check import StepOutcome, check_account
from services.fetcher.mail_source import StepFailed
from services.fetcher.oauth_tokens import TokenBroker
from tests.fetcher.graph_peer import graph_account, mime
from tests.peers.graph_stub import GraphStub, IntrospectedTokens, StubTenant

pytestmark = pytest.mark.stack


@pytest.fixture
def introspecting_stub(stack):
    from mailintake.stack.layout import StackLayout

    layout = StackLayout(stack.state_dir)
    introspector = stack.oidc_client("dovecot")
    tokens = IntrospectedTokens(f"{stack.oidc_issuer}/token/introspection", introspector.client_id,
                                introspector.client_secret, stack.ca_file)
    stub = GraphStub(StubTenant(), layout.server_cert, layout.server_key, tokens=tokens).start()
    yield stub
    stub.stop()
    tokens.close()


def app_account(stack, stub, account_id: str, mailbox: str):
    client = stack.oidc_client("mailintake-app")
    return graph_account(stack, stub, account_id, mailbox, oauth2={
        "provider": "oidc", "authority": stack.oidc_issuer, "client_id": client.client_id,
        "client_secret": client.client_secret, "ca_file": str(stack.ca_file), "scopes": [f"mailbox:{mailbox}"],
    })


def revoke(stack, token: str) -> None:
    client = stack.oidc_client("mailintake-app")
    answer = httpx.post(f"{stack.oidc_issuer}/token/revocation", data={"token": token},
                        auth=(client.client_id, client.client_secret),
                        verify=ssl.create_default_context(cafile=str(stack.ca_file)), timeout=10)
    assert answer.status_code == 200, answer.text


def test_a_graph_poll_with_tokens_from_the_provider_and_a_revoked_token_replaced(
    stack, unique, introspecting_stub, fetcher_for, mail_raw
):
    address = f"support@{stack.mail_domain}"
    box = introspecting_stub.tenant.add_mailbox(address)
    first = [mime(unique, n) for n in range(2)]
    for raw in first:
        box.deliver(raw)
    account = app_account(stack, introspecting_stub, f"graph-oidc-{unique}", address)
    fetcher = fetcher_for(account)

    assert fetcher.poll(account) == 2
    assert [r.raw for r in mail_raw.records(account.id)] == first
    assert {r.principal for r in introspecting_stub.requests} == {address}, "the token's username claim names the mailbox"

    revoke(stack, fetcher._tokens.access_token(account))
    later = mime(f"{unique}-later", 0)
    box.deliver(later)
    asked_before = len(introspecting_stub.requests)
    assert fetcher.poll(account) == 1
    assert [r.status for r in introspecting_stub.requests[asked_before:]][:2] == [401, 200], "refused, then a new token"
    assert [r.raw for r in mail_raw.records(account.id)] == [*first, later]


def test_a_mailbox_the_application_may_not_ask_for_fails_at_token_with_the_providers_words(
    stack, unique, introspecting_stub, fetcher_for
):
    address = f"bob@{stack.mail_domain}"
    introspecting_stub.tenant.add_mailbox(address)
    account = app_account(stack, introspecting_stub, f"graph-oidc-{unique}", address)
    with pytest.raises(StepFailed) as failure:
        fetcher_for(account).poll(account)
    assert failure.value.step == "token"
    assert failure.value.server_reply.startswith("invalid_scope")
    assert introspecting_stub.requests == []


def test_the_connection_check_with_the_token_layer(stack, unique, introspecting_stub):
    address = f"helpdesk@{stack.mail_domain}"
    introspecting_stub.tenant.add_mailbox(address).deliver(mime(unique, 0))
    account = app_account(stack, introspecting_stub, f"graph-oidc-{unique}", address)
    broker = TokenBroker(timeout=10)
    report = check_account(account, timeout=10, tokens=broker)
    assert [(s.name, s.outcome) for s in report.steps] == [
        (name, StepOutcome.OK) for name in ("token", "connect", "tls", "authentication", "folder")
    ]
    assert report.steps[0].detail.startswith(f"an access token from {stack.oidc_issuer}")
    assert report.messages == 1
    assert broker.access_token(account) not in json.dumps(report.model_dump(mode="json")), "no token in the report"
