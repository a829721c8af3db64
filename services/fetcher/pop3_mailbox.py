"""POP3 edge of the fetcher (poplib on a socket we open ourselves).

POP3 has one maildrop, no flags and no folders. What was produced is remembered by
UIDL in PostgreSQL (``pop3_uidls``); ``delete`` issues DELE, which the server commits
only at QUIT; ``mark_seen`` leaves the mail on the server. ``move:`` cannot work and
the account model refuses it.

A mail whose UIDL is recorded but which is still on the server after a ``delete``
means an earlier session ended before its QUIT committed the deletion; it was
acknowledged by Kafka then, so it is deleted now rather than produced again.
"""

from __future__ import annotations

import base64
import poplib
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from services.fetcher.account import OAUTH2_METHODS, Account, Security
from services.fetcher.core import parse_uidl_listing, plan_pop3, pop3_source_id, sasl_bearer, sasl_bearer_abort, sasl_plain
from services.fetcher.mail_connection import MailSession, bearer_refusal, describe_tls, network_step, tls_context
from services.fetcher.mail_source import MailServerError
from services.fetcher.uidl_store import UidlStore

log = structlog.get_logger(__name__)

# poplib refuses lines over 2 KiB, but mail bodies carry longer ones (RFC 5322's 998
# octets is often ignored). Still bounded, so a broken server cannot exhaust memory.
MAX_LINE_BYTES = 4 * 1024 * 1024


def _server_text(exc: poplib.error_proto) -> str:
    text = exc.args[0] if exc.args else str(exc)
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


class _POP3OnSocket(poplib.POP3):
    """poplib on a socket connected (and, for implicit TLS, wrapped) beforehand, so
    each step can be timed on its own and the source address chosen."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self._given_socket = sock
        super().__init__(host, port)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._given_socket

    def _getline(self) -> tuple[bytes, int]:
        line = self.file.readline(MAX_LINE_BYTES + 1)
        if len(line) > MAX_LINE_BYTES:
            raise poplib.error_proto(f"line longer than {MAX_LINE_BYTES} bytes")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets

    def command(self, line: str) -> bytes:
        """One command with a one-line answer; raises ``error_proto`` with the server's line on -ERR."""
        return self._shortcmd(line)

    def multiline(self, line: str) -> tuple[bytes, list[bytes]]:
        response, lines, _ = self._longcmd(line)
        return response, lines


class Pop3Session(MailSession):
    """One POP3 connection of one account."""

    def __init__(self, account: Account, timeout: float, **options: Any) -> None:
        super().__init__(account, timeout, **options)
        self._pop: _POP3OnSocket | None = None
        self._capability_lines: list[str] = []

    # --- opening, one step each -------------------------------------------------

    def start_tls(self) -> str:
        """Implicit TLS or STLS (RFC 2595); the certificate is always verified."""
        security = self.account.security
        if security is Security.NONE:
            return "not used (security: none)"
        context = tls_context(self.account)
        if security is Security.TLS:
            return self._implicit_tls(context)
        pop = self._greet("tls")
        with network_step("tls", self._timeout):
            try:
                _, lines = pop.multiline("CAPA")
            except poplib.error_proto as exc:
                raise MailServerError("tls", _server_text(exc), "security is starttls, but the server has no CAPA to offer STLS.") from None
            offered = [line.decode("utf-8", "replace") for line in lines]
            if "STLS" not in (line.strip().upper() for line in offered):
                raise MailServerError("tls", ", ".join(offered), "security is starttls, but the server does not offer STLS.")
            try:
                pop.stls(context)
            except poplib.error_proto as exc:
                raise MailServerError("tls", _server_text(exc)) from None
        self._encrypted = True
        return describe_tls(pop.sock, self.account)

    def capabilities(self) -> str:
        """The server's CAPA lines (RFC 2449) as sent, joined by ', '; or its -ERR if it has no CAPA."""
        pop = self._greet("capabilities")
        with network_step("capabilities", self._timeout):
            try:
                _, lines = pop.multiline("CAPA")
            except poplib.error_proto as exc:
                self._capability_lines = []
                self.capability_line = _server_text(exc)
                return self.capability_line
        self._capability_lines = [line.decode("utf-8", "replace") for line in lines]
        self.capability_line = ", ".join(self._capability_lines)
        return self.capability_line

    def authenticate(self) -> str:
        """Log in with the account's method; the password is never sent in the clear
        unless prevent_plaintext_login is off and security is none."""
        account, pop = self.account, self._greet("authentication")
        mechanisms = {
            word.upper() for line in self._capability_lines if line.upper().startswith("SASL ") for word in line.split()[1:]
        }
        if account.authentication in OAUTH2_METHODS:
            return self._bearer_login(pop, mechanisms)
        username, password = account.username, account.secret_password()
        if account.prevent_plaintext_login:
            if "PLAIN" not in mechanisms:
                raise MailServerError(
                    "authentication",
                    self.capability_line,
                    "The server offers no SASL mechanism we may use: prevent_plaintext_login allows only "
                    "AUTH PLAIN, and CAPA lists no 'SASL ... PLAIN'. The password was not sent.",
                )
            if not self._encrypted:
                raise MailServerError(
                    "authentication",
                    None,
                    "The password was not sent: with security none, AUTH PLAIN would carry it unencrypted "
                    "(base64 hides nothing), which prevent_plaintext_login forbids. Use tls or starttls, "
                    "or turn prevent_plaintext_login off.",
                )
            if "\0" in username or "\0" in password:
                raise MailServerError("authentication", None, "A user name or password with NUL cannot be sent with SASL PLAIN.")
            with network_step("authentication", self._timeout):
                try:
                    # RFC 5034: AUTH PLAIN, the server's "+ " continuation, then the base64 message.
                    pop.command("AUTH PLAIN")
                    pop.command(base64.b64encode(sasl_plain(username, password)).decode("ascii"))
                except poplib.error_proto as exc:
                    raise MailServerError("authentication", _server_text(exc)) from None
            return f"AUTH PLAIN as {username}"
        if any(c in username + password for c in "\r\n\0"):
            raise MailServerError(
                "authentication", None, "The password was not sent: USER and PASS cannot carry line breaks or NUL."
            )
        with network_step("authentication", self._timeout):
            try:
                pop.user(username)
                # poplib sends commands as UTF-8, so a non-ASCII password reaches the server as UTF-8 bytes.
                pop.pass_(password)
            except poplib.error_proto as exc:
                raise MailServerError("authentication", _server_text(exc)) from None
        return f"USER/PASS as {username}"

    def _bearer_login(self, pop: _POP3OnSocket, offered: set[str]) -> str:
        """AUTH XOAUTH2 or OAUTHBEARER (RFC 5034) with the account's access token."""
        account = self.account
        mechanism = self._bearer_mechanism(offered)
        token = self._bearer_token()
        message = sasl_bearer(mechanism, account.username, token, account.host, account.port)
        challenges: list[bytes] = []
        with network_step("authentication", self._timeout):
            try:
                pop.command(f"AUTH {mechanism}")
                answer = pop.command(base64.b64encode(message).decode("ascii"))
                if answer == b"+" or answer.startswith(b"+ "):
                    # An error challenge (RFC 7628 status JSON): answer it, and the server
                    # sends its final -ERR, raised below with its exact text.
                    challenges.append(base64.b64decode(answer[1:].strip() or b""))
                    pop.command(base64.b64encode(sasl_bearer_abort(mechanism)).decode("ascii"))
                    raise MailServerError("authentication", None, bearer_refusal(mechanism, challenges) + " It accepted the abort instead of refusing.")
            except poplib.error_proto as exc:
                raise MailServerError("authentication", _server_text(exc), bearer_refusal(mechanism, challenges)) from None
        return f"AUTH {mechanism} as {account.username}"

    def open(self) -> None:
        """Connect, secure, read capabilities and authenticate."""
        try:
            self.connect()
            self.start_tls()
            self.capabilities()
            self.authenticate()
        except BaseException:
            self.close()
            raise

    # --- after authentication ---------------------------------------------------

    def stat(self) -> tuple[int, int]:
        """Number of mails and their total size in octets."""
        with network_step("select", self._timeout):
            try:
                return self._authenticated().stat()
            except poplib.error_proto as exc:
                raise MailServerError("select", _server_text(exc)) from None

    def listing(self) -> list[tuple[int, str]]:
        """(message number, UIDL) of every mail in the maildrop."""
        with network_step("list", self._timeout):
            try:
                _, lines = self._authenticated().multiline("UIDL")
            except poplib.error_proto as exc:
                raise MailServerError("list", _server_text(exc), "The server must support UIDL (RFC 1939).") from None
        return parse_uidl_listing(lines)

    def retrieve(self, number: int) -> bytes:
        with network_step("fetch", self._timeout):
            try:
                _, lines = self._authenticated().multiline(f"RETR {number}")
            except poplib.error_proto as exc:
                raise MailServerError("fetch", _server_text(exc)) from None
        return b"\r\n".join(lines) + b"\r\n"

    def delete(self, number: int) -> None:
        """Mark for deletion; the server deletes at QUIT."""
        with network_step("after_fetch", self._timeout):
            try:
                self._authenticated().command(f"DELE {number}")
            except poplib.error_proto as exc:
                raise MailServerError("after_fetch", _server_text(exc)) from None

    def close(self) -> None:
        """QUIT (which commits deletions); never raises, but logs a QUIT the server refused."""
        pop, sock = self._pop, self._sock
        self._pop = self._sock = None
        if pop is not None:
            try:
                pop.quit()
            except (poplib.error_proto, OSError) as exc:
                # Deletions stay uncommitted; the next session deletes them (see the module doc).
                log.warning("pop3.quit_failed", server_reply=_server_text(exc) if isinstance(exc, poplib.error_proto) else str(exc))
                try:
                    pop.close()
                except OSError:
                    pass
        elif sock is not None:
            sock.close()

    # --- internals ----------------------------------------------------------------

    def _greet(self, step: str) -> _POP3OnSocket:
        """The protocol client, reading the server's greeting on first use."""
        if self._pop is None:
            sock = self._require_socket()
            with network_step(step, self._timeout):
                try:
                    self._pop = _POP3OnSocket(sock, self.account.host, self.account.port)
                except poplib.error_proto as exc:
                    raise MailServerError(step, _server_text(exc), "The server's greeting refused the session.") from None
        return self._pop

    def _authenticated(self) -> _POP3OnSocket:
        if self._pop is None:
            raise RuntimeError("open() first")
        return self._pop


class Pop3Mailbox:
    """The mail source of one POP3 maildrop, with its produced UIDLs in PostgreSQL."""

    def __init__(self, account: Account, uidls: UidlStore, timeout: float, **options: Any) -> None:
        """``options`` go to :class:`Pop3Session` (source_address, access_token, bearer_mechanisms)."""
        self.account = account
        self._uidls = uidls
        self._session = Pop3Session(account, timeout, **options)
        self._numbers: dict[str, int] = {}

    def open(self) -> None:
        self._session.open()

    def pending(self) -> list[str]:
        account = self.account
        plan = plan_pop3(self._session.listing(), self._uidls.seen(account.id))
        if plan.vanished:
            self._uidls.forget(account.id, plan.vanished)
        if account.after_fetch == "delete" and plan.leftovers:
            log.warning("pop3.deleting_leftovers", mails=len(plan.leftovers))
            for number, _ in plan.leftovers:
                self._session.delete(number)
        self._numbers = {pop3_source_id(uidl): number for number, uidl in plan.pending}
        return list(self._numbers)

    def sizes(self) -> Mapping[str, int]:
        """None told beforehand: chunks are counted in mails."""
        return {}

    def fetch(self, source_ids: Sequence[str]) -> Mapping[str, bytes]:
        return {source_id: self._session.retrieve(self._numbers[source_id]) for source_id in source_ids}

    def after_fetch(self, source_ids: Sequence[str]) -> None:
        action = self.account.after_fetch
        if action == "delete":
            for source_id in source_ids:
                self._session.delete(self._numbers[source_id])
        elif action != "mark_seen":
            # The account model refuses move: for POP3; this only guards a model built without validation.
            raise MailServerError("after_fetch", None, f"after_fetch {action!r} is not available for POP3.")

    def advance(self, source_ids: Sequence[str]) -> None:
        self._uidls.remember(self.account.id, [s.removeprefix("pop3:") for s in source_ids])

    def close(self) -> None:
        self._session.close()
