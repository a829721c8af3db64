"""What the Graph tests share: the stub on the stack's certificate, accounts pointing at
it, and access tokens issued by the stub (until the OAuth2 token layer issues them)."""

from __future__ import annotations

from services.fetcher.account import Account
from tests.peers.graph_stub import GraphStub, RegisteredTokens, StubTenant


class StubIssuedTokens:
    """A :class:`~services.fetcher.graph_mailbox.BearerTokens` whose tokens the stub issues,
    for one principal; counts the refreshes it was asked for."""

    def __init__(self, registry: RegisteredTokens, principal: str, *, app_only: bool = True, lifetime: float = 3600) -> None:
        self._registry, self._principal, self._app_only, self._lifetime = registry, principal, app_only, lifetime
        self.current: str | None = None
        self.refreshes = 0

    def token(self) -> str:
        if self.current is None:
            self.current = self._registry.issue(self._principal, app_only=self._app_only, lifetime=self._lifetime)
        return self.current

    def refresh(self) -> str:
        self.refreshes += 1
        self.current = None
        return self.token()


def start_graph_stub(stack) -> GraphStub:
    from mailintake.stack.layout import StackLayout

    layout = StackLayout(stack.state_dir)
    return GraphStub(StubTenant(), layout.server_cert, layout.server_key).start()


def graph_account(stack, stub: GraphStub, account_id: str, mailbox: str, **fields) -> Account:
    values = {
        "id": account_id,
        "name": f"Graph {mailbox}",
        "protocol": "graph",
        "host": "localhost",
        "port": stub.port,
        "ca_file": stack.ca_file,
        "username": mailbox,
        "authentication": "oauth2_client_credentials",
        "oauth2": {"provider": "oidc", "authority": "https://localhost/", "client_id": "mailintake-test",
                   "client_secret": "not-used-by-the-stub"},
        "poll_interval_seconds": 5,
    }
    return Account(**(values | fields))


def mime(tag: str, number: int, padding: str = "") -> bytes:
    return (
        f"From: erika@example.org\r\nTo: desk@example.test\r\nSubject: Printer {tag} #{number}\r\n"
        f"Message-ID: <graph-{tag}-{number}@example.org>\r\n\r\nJammed {number}.\r\n{padding}"
    ).encode()
