"""IMAP edge of the fetcher (imapclient on a socket we open ourselves).

:class:`ImapSession` is one connection, opened step by step (connect, TLS,
capabilities, authentication) so that the connection check can time and report each
step; :class:`ImapMailbox` is the :class:`~services.fetcher.mail_source.MailSource`
the poll loop uses, with the UIDVALIDITY + UID high-water mark in PostgreSQL.
"""

from __future__ import annotations

import ast
import imaplib
import logging
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.response_parser import parse_fetch_response

from services.fetcher.account import OAUTH2_METHODS, Account, Security
from services.fetcher.core import (
    imap_bodies,
    imap_quoted,
    imap_sizes,
    imap_source_id,
    imap_uid,
    plan_fetch,
    sasl_bearer,
    sasl_bearer_abort,
)
from services.fetcher.cursor_store import CursorStore
from services.fetcher.mail_connection import (
    MailSession,
    bearer_refusal,
    describe_tls,
    network_step,
    tls_context,
)
from services.fetcher.mail_source import MailServerError

__all__ = ["ImapMailbox", "ImapSession", "MailServerError", "tls_context"]

log = structlog.get_logger(__name__)

# imapclient words a failed tagged reply as "<command> failed: <server text>".
_IMAPCLIENT_PREFIX = re.compile(r"^[a-z_]+ failed: ")
# imaplib words a BAD reply as "<COMMAND> command error: BAD [b'<server text>']".
_IMAPLIB_BAD = re.compile(r"^[A-Z]+ command error: BAD (\[.*\])$", re.DOTALL)


def _server_text(exc: BaseException) -> str:
    """The server's reply inside an imaplib/imapclient error, as the server sent it
    (after the tag; a BAD reply keeps its "BAD ", a NO reply is its text).

    imapclient re-raises a failed LOGIN as ``LoginError(str(original))``, which turns
    imaplib's bytes into ``"b'...'"``; the original error (the implicit context) still
    holds the bytes, so it is preferred.
    """
    original = exc.__context__ if isinstance(exc.__context__, imaplib.IMAP4.error) else exc
    text = original.args[0] if original.args else str(original)
    if isinstance(text, bytes):
        return text.decode("utf-8", "replace")
    text = _IMAPCLIENT_PREFIX.sub("", str(text), count=1)
    if bad := _IMAPLIB_BAD.match(text):
        try:
            parts = ast.literal_eval(bad.group(1))
            return "BAD " + " ".join(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in parts)
        except (ValueError, SyntaxError):
            pass
    return text


class _IMAP4OnSocket(imaplib.IMAP4):
    """imaplib on a socket connected (and, for implicit TLS, wrapped) beforehand, so
    each step can be timed on its own and the source address chosen."""

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        self._given_socket = sock
        super().__init__(host, port)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return self._given_socket


class _IMAPClientOnSocket(IMAPClient):
    def __init__(self, sock: socket.socket, host: str, port: int, timeout: float) -> None:
        self._given_socket = sock
        super().__init__(host, port=port, ssl=False, timeout=timeout)
        # imapclient turns imaplib's debug output on and sends it to a logger, so imaplib
        # formats a repr of every response (each mail's bytes) even when nothing logs at
        # DEBUG: that cost more than the rest of the fetch. Only when it would be logged.
        if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
            self._imap.debug = 0

    def _create_IMAP4(self) -> imaplib.IMAP4:
        return _IMAP4OnSocket(self._given_socket, self.host, self.port)


class ImapSession(MailSession):
    """One IMAP connection of one account."""

    def __init__(self, account: Account, timeout: float, **options: Any) -> None:
        super().__init__(account, timeout, **options)
        self._client: IMAPClient | None = None
        self._capabilities: frozenset[str] = frozenset()

    # --- opening, one step each -------------------------------------------------

    def start_tls(self) -> str:
        """Implicit TLS or STARTTLS; the certificate is always verified."""
        security = self.account.security
        if security is Security.NONE:
            return "not used (security: none)"
        context = tls_context(self.account)
        if security is Security.TLS:
            return self._implicit_tls(context)
        client = self._greet("tls")
        if b"STARTTLS" not in client.capabilities():
            caps = " ".join(c.decode("ascii", "replace") for c in client.capabilities())
            raise MailServerError(
                "tls", f"* CAPABILITY {caps}", "security is starttls but the server does not offer STARTTLS."
            )
        with network_step("tls", self._timeout):
            try:
                client.starttls(context)
            except IMAPClientError as exc:
                raise MailServerError("tls", _server_text(exc)) from None
        self._encrypted = True
        return describe_tls(client.socket(), self.account)

    def capabilities(self) -> str:
        """The server's CAPABILITY line, exactly as sent (after TLS, if any)."""
        client = self._greet("capabilities")
        with network_step("capabilities", self._timeout):
            try:
                # imapclient normalises capabilities; imaplib's command returns the server's text.
                _, data = client._imap.capability()
            except IMAPClientError as exc:
                raise MailServerError("capabilities", _server_text(exc)) from None
        text = data[-1].decode("utf-8", "replace") if data and data[-1] else ""
        self.capability_line = f"* CAPABILITY {text}"
        self._capabilities = frozenset(text.upper().split())
        return self.capability_line

    def authenticate(self) -> str:
        """Log in with the account's method; the password is never sent in the clear
        unless prevent_plaintext_login is off and security is none."""
        account, client = self.account, self._greet("authentication")
        if account.authentication in OAUTH2_METHODS:
            return self._bearer_login(client)
        username, password = account.username, account.secret_password()
        if account.prevent_plaintext_login:
            if "AUTH=PLAIN" not in self._capabilities:
                raise MailServerError(
                    "authentication",
                    self.capability_line,
                    "The server offers no SASL mechanism we may use: prevent_plaintext_login allows only "
                    "AUTHENTICATE PLAIN, and the capabilities lack AUTH=PLAIN. The password was not sent.",
                )
            if not self._encrypted:
                raise MailServerError(
                    "authentication",
                    None,
                    "The password was not sent: with security none, AUTHENTICATE PLAIN would carry it "
                    "unencrypted (base64 hides nothing), which prevent_plaintext_login forbids. "
                    "Use tls or starttls, or turn prevent_plaintext_login off.",
                )
            if "\0" in username or "\0" in password:
                raise MailServerError("authentication", None, "A user name or password with NUL cannot be sent with SASL PLAIN.")
            with network_step("authentication", self._timeout):
                try:
                    # imaplib encodes the SASL message as UTF-8, so non-ASCII passwords work.
                    client.plain_login(username, password)
                except IMAPClientError as exc:
                    raise MailServerError("authentication", _server_text(exc)) from None
            return f"AUTHENTICATE PLAIN as {username}"
        if "LOGINDISABLED" in self._capabilities:
            raise MailServerError(
                "authentication",
                self.capability_line,
                "The server refuses LOGIN on this connection (LOGINDISABLED, and RFC 3501 forbids sending "
                "LOGIN then). The password was not sent. Use tls or starttls.",
            )
        if not (username + password).isascii() or any(c in username + password for c in "\r\n\0"):
            # imaplib would raise UnicodeEncodeError here; its message quotes the
            # offending character of the password, so it is not passed on.
            raise MailServerError(
                "authentication",
                None,
                "The password was not sent: IMAP LOGIN carries only ASCII without line breaks, and the "
                "user name or password has other characters (imaplib: UnicodeEncodeError). Turn "
                "prevent_plaintext_login on to authenticate with AUTHENTICATE PLAIN, which is UTF-8.",
            )
        with network_step("authentication", self._timeout):
            try:
                client.login(imap_quoted(username), password)
            except IMAPClientError as exc:
                raise MailServerError("authentication", _server_text(exc)) from None
        return f"LOGIN as {username}"

    def _bearer_login(self, client: IMAPClient) -> str:
        """AUTHENTICATE XOAUTH2 or OAUTHBEARER with the account's access token."""
        account = self.account
        offered = {c.removeprefix("AUTH=") for c in self._capabilities if c.startswith("AUTH=")}
        mechanism = self._bearer_mechanism(offered)
        token = self._bearer_token()
        message = sasl_bearer(mechanism, account.username, token, account.host, account.port)
        challenges: list[bytes] = []

        def respond(challenge: bytes) -> bytes:
            # The first continuation is empty and asks for our message; a second one is
            # the server's error challenge, answered so that it sends its final reply.
            if not challenges:
                challenges.append(b"")
                return message
            challenges.append(challenge)
            return sasl_bearer_abort(mechanism)

        with network_step("authentication", self._timeout):
            try:
                client.sasl_login(mechanism, respond)
            except IMAPClientError as exc:
                raise MailServerError("authentication", _server_text(exc), bearer_refusal(mechanism, challenges[1:])) from None
        return f"AUTHENTICATE {mechanism} as {account.username}"

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

    def select(self, folder: str, *, readonly: bool = False) -> tuple[int, int]:
        """Select ``folder``; return its UIDVALIDITY and how many mails it holds."""
        client = self._authenticated()
        with network_step("select", self._timeout):
            try:
                info = client.select_folder(folder, readonly=readonly)
            except IMAPClientError as exc:
                raise MailServerError("select", _server_text(exc)) from None
        return int(info[b"UIDVALIDITY"]), int(info[b"EXISTS"])

    def require_folder(self, folder: str) -> None:
        """Fail unless ``folder`` exists; STATUS gives the server's own words when it does not."""
        client = self._authenticated()
        with network_step("select", self._timeout):
            try:
                client.folder_status(folder, [b"MESSAGES"])
            except IMAPClientError as exc:
                raise MailServerError(
                    "select",
                    _server_text(exc),
                    f"The after-fetch target folder {folder!r} cannot be used; create it on the server "
                    "(the fetcher creates no folders, so a typo cannot make one).",
                ) from None

    def sizes_from(self, uid: int) -> dict[int, int]:
        """Octets by UID of the selected folder's mails from ``uid`` on (the server adds the
        highest UID if none is): the listing and the sizes that chunk the fetch, in one command."""
        return self._uid_fetch("list", f"{uid}:*", "RFC822.SIZE", b"RFC822.SIZE", imap_sizes)

    def fetch(self, uids: Sequence[int]) -> dict[int, bytes]:
        """Raw bytes by UID. BODY.PEEK keeps \\Seen unset: flagging waits for Kafka's ack."""
        bodies = self._uid_fetch("fetch", ",".join(map(str, uids)), "BODY.PEEK[]", b"BODY[]", imap_bodies)
        # Unsolicited responses may name mails not asked for.
        return {uid: bodies[uid] for uid in uids if uid in bodies}

    def _uid_fetch(
        self,
        step: str,
        message_set: str,
        item: str,
        answer_item: bytes,
        read_usual: Callable[[list], dict[int, Any] | None],
    ) -> dict[int, Any]:
        """``UID FETCH message_set (item)``: ``answer_item``'s value by UID.

        Sent with imaplib's own UID command: ``read_usual`` reads the usual response shape
        with a regex match per mail, and only another shape (an unsolicited FLAGS update,
        say) goes through imapclient's parser, which tokenises every response in Python.
        """
        client = self._authenticated()
        with network_step(step, self._timeout):
            try:
                typ, data = client._imap.uid("FETCH", message_set, f"({item})")
            except IMAPClientError as exc:
                raise MailServerError(step, _server_text(exc)) from None
        if typ != "OK":  # a NO reply; imaplib raises on BAD
            reply = data[-1] if data and isinstance(data[-1], bytes) else typ.encode()
            raise MailServerError(step, reply.decode("utf-8", "replace"))
        found = read_usual(data)
        if found is None:
            parsed = parse_fetch_response(data, client.normalise_times, True)
            found = {uid: fields[answer_item] for uid, fields in parsed.items() if answer_item in fields}
        return found

    def act(self, action: str, uids: Sequence[int]) -> None:
        """Apply ``action`` (mark_seen, delete, move:<folder>) to ``uids``."""
        client, uids = self._authenticated(), list(uids)
        with network_step("after_fetch", self._timeout):
            try:
                if action == "mark_seen":
                    client.add_flags(uids, [b"\\Seen"], silent=True)
                elif action == "delete":
                    client.delete_messages(uids, silent=True)
                    self._expunge(uids)
                else:
                    target = action.removeprefix("move:")
                    if client.has_capability("MOVE"):
                        client.move(uids, target)
                    else:
                        client.copy(uids, target)
                        client.delete_messages(uids, silent=True)
                        self._expunge(uids)
            except IMAPClientError as exc:
                raise MailServerError("after_fetch", _server_text(exc)) from None

    def _expunge(self, uids: list[int]) -> None:
        # UID EXPUNGE removes only these mails, not ones another client marked deleted.
        client = self._authenticated()
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()

    def close(self) -> None:
        """Log out; never raises (the connection may already be gone)."""
        client, sock = self._client, self._sock
        self._client = self._sock = None
        if client is not None:
            try:
                client.logout()
            except Exception:  # noqa: BLE001 - nothing is lost: acted-on mails were acknowledged before
                try:
                    client.shutdown()
                except Exception:  # noqa: BLE001
                    pass
        elif sock is not None:
            sock.close()

    # --- internals ----------------------------------------------------------------

    def _greet(self, step: str) -> IMAPClient:
        """The protocol client, reading the server's greeting on first use."""
        if self._client is None:
            sock = self._require_socket()
            with network_step(step, self._timeout):
                try:
                    self._client = _IMAPClientOnSocket(sock, self.account.host, self.account.port, self._timeout)
                except imaplib.IMAP4.error as exc:
                    raise MailServerError(step, _server_text(exc), "The server's greeting refused the session.") from None
        return self._client

    def _authenticated(self) -> IMAPClient:
        if self._client is None:
            raise RuntimeError("open() first")
        return self._client


class ImapMailbox:
    """The mail source of one IMAP folder, with its high-water mark in PostgreSQL."""

    def __init__(self, account: Account, cursors: CursorStore, timeout: float, **options: Any) -> None:
        """``options`` go to :class:`ImapSession` (source_address, access_token, bearer_mechanisms)."""
        self.account = account
        self._cursors = cursors
        self._session = ImapSession(account, timeout, **options)
        self._uidvalidity = 0
        self._sizes: dict[str, int] = {}

    def open(self) -> None:
        """Log in, check the move target exists (before any mail is produced), select the folder."""
        self._session.open()
        try:
            if self.account.after_fetch.startswith("move:"):
                self._session.require_folder(self.account.after_fetch.removeprefix("move:"))
            self._uidvalidity, _ = self._session.select(self.account.folder)
        except BaseException:
            self._session.close()
            raise

    def pending(self) -> list[str]:
        account = self.account
        cursor = self._cursors.load(account.id, account.folder)
        changed = cursor.uidvalidity is not None and cursor.uidvalidity != self._uidvalidity
        sizes = self._session.sizes_from(1 if changed else cursor.last_uid + 1)
        plan = plan_fetch(cursor, self._uidvalidity, list(sizes))
        if plan.uidvalidity_changed:
            log.warning(
                "imap.uidvalidity_changed", old=cursor.uidvalidity, new=self._uidvalidity, mails_to_fetch_again=len(plan.uids)
            )
            # Nothing of the new generation is produced yet; recording that loses nothing
            # and keeps an empty folder from looking changed on every poll.
            self._cursors.save_mark(account.id, account.folder, self._uidvalidity, 0)
        self._sizes = {imap_source_id(self._uidvalidity, uid): sizes[uid] for uid in plan.uids}
        return list(self._sizes)

    def sizes(self) -> Mapping[str, int]:
        return self._sizes

    def fetch(self, source_ids: Sequence[str]) -> Mapping[str, bytes]:
        by_uid = self._session.fetch([imap_uid(s) for s in source_ids])
        return {imap_source_id(self._uidvalidity, uid): raw for uid, raw in sorted(by_uid.items())}

    def after_fetch(self, source_ids: Sequence[str]) -> None:
        if source_ids:
            self._session.act(self.account.after_fetch, [imap_uid(s) for s in source_ids])

    def advance(self, source_ids: Sequence[str]) -> None:
        if source_ids:
            last_uid = max(imap_uid(s) for s in source_ids)
            self._cursors.save_mark(self.account.id, self.account.folder, self._uidvalidity, last_uid)

    def close(self) -> None:
        self._session.close()
