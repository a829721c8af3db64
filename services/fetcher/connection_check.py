"""The connection check of one account: each step timed, and on failure the mail
server's reply exactly as it sent it.

Steps, in order: ``token`` (OAuth2 accounts only: an access token from the identity
provider, or its exact refusal), ``connect`` (TCP), ``tls`` (implicit TLS or STARTTLS/STLS, the
certificate verified), ``capabilities`` (the server's line), ``authentication`` (the
account's method), ``select`` (IMAP: examine the folder read-only, and check the
``move:`` target exists; POP3: STAT). EWS: ``connect``, ``tls``, ``authentication``
(the server's ``WWW-Authenticate`` offer to a request without credentials, the scheme
chosen from it under ``prevent_ntlm``, then one authenticated request), ``folder``
(GetFolder: the item count). Graph: ``token`` (an access token from the OAuth2 token
layer), ``connect``, ``tls``, ``authentication`` (one request on the mailbox with the
token), ``folder`` (the folder and a ``move:`` target resolved, the item count). The
first failure ends the check.

:func:`check_account` is what the CLI, the stored-accounts code and the admin API call;
:class:`CheckReport` is what they get, and it never contains the password.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from services.fetcher.account import OAUTH2_METHODS, Account, AccountProtocol, Security
from services.fetcher.graph_mailbox import AccountTokens, BearerTokens, GraphMailbox, InMemoryDeltaState
from services.fetcher.imap_mailbox import ImapSession
from services.fetcher.mail_connection import describe_tcp, describe_tls, open_tcp, tls_context, wrap_tls
from services.fetcher.mail_source import StepFailed
from services.fetcher.oauth_tokens import TokenBroker
from services.fetcher.pop3_mailbox import Pop3Session

REDACTED = "********"


class StepOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class CheckStep(BaseModel):
    """One step of the check."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    name: str
    """token (OAuth2), connect, tls, capabilities, authentication, select (IMAP, POP3) or folder (EWS, Graph)."""
    outcome: StepOutcome
    milliseconds: float
    """How long the step took."""
    detail: str
    """What the step saw, or why it failed, in our words."""
    server_reply: str | None = None
    """The server's text exactly as sent: its capability line, or its refusal (for ``token``, the
    identity provider's ``error: error_description``)."""


class CheckReport(BaseModel):
    """The outcome of checking one account; safe to show and to return as JSON."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    account_id: str
    protocol: str
    host: str
    port: int
    security: str
    username: str
    authentication: str
    """The method the account's settings allow: SASL PLAIN only, or LOGIN / USER+PASS."""
    checked_at: datetime
    ok: bool
    steps: list[CheckStep]
    messages: int | None = None
    """Mails in the folder (IMAP, EWS) or the maildrop (POP3), when the check got that far."""

    @property
    def failure(self) -> CheckStep | None:
        return next((s for s in self.steps if s.outcome is StepOutcome.FAILED), None)


def _authentication_method(account: Account) -> str:
    if account.protocol is AccountProtocol.GRAPH:
        return f"{account.authentication.value}: OAuth2 bearer token on every Graph request"
    if account.authentication in OAUTH2_METHODS:
        return f"{account.authentication.value}: OAuth2 bearer token over SASL XOAUTH2 or OAUTHBEARER"
    if account.protocol is AccountProtocol.EWS:
        return "Kerberos (Negotiate) only" if account.prevent_ntlm else "Kerberos (Negotiate), else NTLM, else Basic"
    if account.protocol is AccountProtocol.POP3:
        return "AUTH PLAIN (SASL, UTF-8)" if account.prevent_plaintext_login else "USER/PASS"
    return "AUTHENTICATE PLAIN (SASL, UTF-8)" if account.prevent_plaintext_login else "LOGIN"


def check_account(
    account: Account,
    *,
    timeout: float = 30.0,
    source_address: str | None = None,
    tokens: TokenBroker | None = None,
    bearer_tokens: Callable[[Account], BearerTokens] | None = None,
) -> CheckReport:
    """Run the connection check of ``account``; never raises for a mail-server problem.

    OAuth2 accounts get their token from ``tokens`` (a broker of their own when None, so
    the check always asks the identity provider afresh); ``bearer_tokens`` replaces it
    for Graph accounts (tests hand in tokens a stub issued).
    """
    steps: list[CheckStep] = []
    messages: int | None = None
    access_token: str | None = None

    def run(name: str, action: Callable[[], str], skipped: bool = False) -> bool:
        started = time.perf_counter()
        try:
            detail = action()
        except StepFailed as exc:
            outcome, detail, reply = StepOutcome.FAILED, exc.explanation or "the server refused", exc.server_reply
        except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
            outcome, detail, reply = StepOutcome.FAILED, f"{type(exc).__name__}: {exc}", None
        else:
            outcome = StepOutcome.SKIPPED if skipped else StepOutcome.OK
            reply = session.capability_line if name == "capabilities" else None
            if name == "capabilities":
                detail = "the server's capabilities"
        milliseconds = round((time.perf_counter() - started) * 1000, 1)
        steps.append(CheckStep(name=name, outcome=outcome, milliseconds=milliseconds, detail=detail, server_reply=reply))
        return outcome is not StepOutcome.FAILED

    if account.protocol is AccountProtocol.EWS:
        return _check_ews(account, timeout, source_address)
    if account.protocol is AccountProtocol.GRAPH:
        source = tokens or TokenBroker(timeout=timeout)
        return _check_graph(account, timeout, source_address, bearer_tokens or (lambda a: AccountTokens(source, a)))
    if account.protocol not in (AccountProtocol.IMAP, AccountProtocol.POP3):
        raise ValueError(f"the connection check of {account.protocol.value} accounts is not in this module")
    oauth2 = account.authentication in OAUTH2_METHODS
    broker = tokens or TokenBroker(timeout=timeout)

    def token() -> str:
        nonlocal access_token
        access_token = broker.access_token(account)
        assert account.oauth2 is not None
        return f"access token from {account.oauth2.issuer} for client {account.oauth2.client_id} ({account.authentication.value})"

    options = {"source_address": source_address, "access_token": (lambda: access_token or "") if oauth2 else None}
    if account.protocol is AccountProtocol.IMAP:
        session: ImapSession | Pop3Session = ImapSession(account, timeout, **options)
    else:
        session = Pop3Session(account, timeout, **options)

    def select() -> str:
        nonlocal messages
        if isinstance(session, ImapSession):
            target = account.after_fetch.removeprefix("move:") if account.after_fetch.startswith("move:") else None
            if target is not None:
                session.require_folder(target)
            uidvalidity, messages = session.select(account.folder, readonly=True)
            found = f"{account.folder}: {messages} messages (UIDVALIDITY {uidvalidity})"
            return found + (f"; move target {target!r} exists" if target is not None else "")
        messages, octets = session.stat()
        return f"maildrop: {messages} messages, {octets} octets"

    plan: list[tuple[str, Callable[[], str], bool]] = [
        *([("token", token, False)] if oauth2 else []),
        ("connect", session.connect, False),
        ("tls", session.start_tls, account.security is Security.NONE),
        ("capabilities", session.capabilities, False),
        ("authentication", session.authenticate, False),
        ("select", select, False),
    ]
    try:
        for name, action, skipped in plan:
            if not run(name, action, skipped):
                break
    finally:
        session.close()
    return _report(account, steps, messages, extra_secrets=(access_token,))


def _timed(steps: list[CheckStep], name: str, action: Callable[[], str]) -> bool:
    """Run one step, append its outcome; False when it failed."""
    started = time.perf_counter()
    reply = None
    try:
        detail, outcome = action(), StepOutcome.OK
    except StepFailed as exc:
        outcome, detail, reply = StepOutcome.FAILED, exc.explanation or "the server refused", exc.server_reply
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not crash
        outcome, detail = StepOutcome.FAILED, f"{type(exc).__name__}: {exc}"
    milliseconds = round((time.perf_counter() - started) * 1000, 1)
    steps.append(CheckStep(name=name, outcome=outcome, milliseconds=milliseconds, detail=detail, server_reply=reply))
    return outcome is StepOutcome.OK


class _HttpsProbe:
    """The connect and tls steps of an HTTPS account (EWS, Graph) on a socket of the check's
    own, so each shows where it failed; the HTTP client then opens its own connection.
    TLS uses the trust anchors the requests use: ca_file, else the system store."""

    def __init__(self, account: Account, timeout: float, source_address: str | None) -> None:
        self._account, self._timeout, self._source_address = account, timeout, source_address
        self._sock: socket.socket | None = None

    def connect(self) -> str:
        self._sock = open_tcp(self._account.host, self._account.port, self._timeout, self._source_address)
        return describe_tcp(self._sock)

    def tls(self) -> str:
        assert self._sock is not None
        self._sock = wrap_tls(self._sock, tls_context(self._account), self._account.host, self._timeout)
        return describe_tls(self._sock, self._account)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _check_ews(account: Account, timeout: float, source_address: str | None) -> CheckReport:
    """EWS: connect (TCP), tls (certificate verified), authentication (the server's offer,
    the scheme chosen, one authenticated request), folder (GetFolder: total count)."""
    # Imported here: exchangelib and GSSAPI are needed only where EWS accounts are checked.
    from services.fetcher.ews_mailbox import (
        CaBundleAdapter,
        EwsMailbox,
        InMemoryItemMarks,
        probe_auth_offer,
        service_endpoint,
    )

    steps: list[CheckStep] = []
    messages: int | None = None
    probe = _HttpsProbe(account, timeout, source_address)
    mailbox = EwsMailbox(account, InMemoryItemMarks(), timeout)

    def authentication() -> str:
        probe.close()
        endpoint = service_endpoint(account)
        if account.ca_file is not None:
            CaBundleAdapter.trust(endpoint, str(account.ca_file))
        offer = probe_auth_offer(endpoint, timeout)
        if offer.status != 401:
            raise StepFailed(
                "authentication", offer.server_reply,
                f"the server answered HTTP {offer.status} to a request without credentials instead of asking to authenticate",
            )
        try:
            chosen = mailbox.authenticate(offer.schemes)
            mailbox.verify_login()
        except StepFailed as exc:
            # The offer is the server's own words on what it accepts; keep it with the refusal.
            reply = "; ".join(filter(None, [exc.server_reply, offer.server_reply]))
            raise StepFailed(exc.step, reply, exc.explanation) from None
        return chosen

    def folder() -> str:
        nonlocal messages
        messages = mailbox.select_folder()
        return f"{account.folder}: {messages} items (GetFolder TotalCount)"

    try:
        for name, action in (
            ("connect", probe.connect), ("tls", probe.tls), ("authentication", authentication), ("folder", folder)
        ):
            if not _timed(steps, name, action):
                break
    finally:
        probe.close()
        mailbox.close()
    return _report(account, steps, messages)


def _check_graph(
    account: Account, timeout: float, source_address: str | None, bearer_tokens: Callable[[Account], BearerTokens]
) -> CheckReport:
    """Graph: token, connect (TCP), tls (certificate verified), authentication (one request
    on the mailbox with the token), folder (resolved, with its item count)."""
    steps: list[CheckStep] = []
    messages: int | None = None
    probe = _HttpsProbe(account, timeout, source_address)
    mailbox: GraphMailbox | None = None
    issued: list[str] = []

    def token() -> str:
        nonlocal mailbox
        tokens = bearer_tokens(account)
        issued.append(tokens.token())
        mailbox = GraphMailbox(account, tokens, InMemoryDeltaState(), timeout, source_address=source_address)
        issuer = account.oauth2.issuer if account.oauth2 else "the token layer"
        return f"an access token from {issuer} ({account.authentication.value})"

    def authentication() -> str:
        assert mailbox is not None
        return mailbox.verify_mailbox()

    def folder() -> str:
        nonlocal messages
        assert mailbox is not None
        messages = mailbox.select_folder()
        target = account.after_fetch.removeprefix("move:") if account.after_fetch.startswith("move:") else None
        return f"{account.folder}: {messages} messages (totalItemCount)" + (f"; move target {target!r} exists" if target else "")

    try:
        for name, action in (("token", token), ("connect", probe.connect), ("tls", probe.tls),
                             ("authentication", authentication), ("folder", folder)):
            if not _timed(steps, name, action):
                break
    finally:
        probe.close()
        if mailbox is not None:
            mailbox.close()
    return _report(account, steps, messages, extra_secrets=tuple(issued))


def _report(
    account: Account, steps: list[CheckStep], messages: int | None, extra_secrets: tuple[str | None, ...] = ()
) -> CheckReport:
    report = CheckReport(
        account_id=account.id,
        protocol=account.protocol.value,
        host=account.host,
        port=account.port,
        security=account.security.value,
        username=account.username,
        authentication=_authentication_method(account),
        checked_at=datetime.now(UTC),
        ok=bool(steps) and all(s.outcome is not StepOutcome.FAILED for s in steps),
        steps=steps,
        messages=messages,
    )
    secrets = [account.password, *(
        (account.oauth2.client_secret, account.oauth2.refresh_token) if account.oauth2 is not None else ()
    )]
    for secret in [*(s.get_secret_value() for s in secrets if s is not None), *extra_secrets]:
        if secret:
            report = _without_password(report, secret)
    return report


def _without_password(report: CheckReport, password: str) -> CheckReport:
    """The report with the password masked in every text a server or library wrote.

    No step puts it there; this is the guarantee against a server that echoes it in an
    error. The account's own settings (id, host, user name) are left alone: they are not
    secret, and a short password could otherwise mask them into nonsense.
    """
    if not password or not any(password in (s.detail + (s.server_reply or "")) for s in report.steps):
        return report
    steps = [
        step.model_copy(
            update={
                "detail": step.detail.replace(password, REDACTED),
                "server_reply": step.server_reply.replace(password, REDACTED) if step.server_reply else step.server_reply,
            }
        )
        for step in report.steps
    ]
    return report.model_copy(update={"steps": steps})
