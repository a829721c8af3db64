"""Microsoft Graph edge of the fetcher (the REST API over httpx), a :class:`MailSource`.

What a poll does, in Graph requests (all under ``/v1.0/users/{address}``, so a shared
mailbox is read by its own address with the delegate's token):

- ``open``: the account's folder is resolved to its id (a well-known name such as
  ``inbox``, else display names from the top of the store, ``A/B`` one level at a
  time), and so is a ``move:`` target, before anything is produced.
- ``pending``: one delta round on ``mailFolders/{id}/messages/delta``: the stored
  ``@odata.deltaLink`` of the last complete round, or the initial query when there is
  none; ``@odata.nextLink`` pages are followed to the round's new deltaLink. Listed
  messages not produced before are pending, oldest ``receivedDateTime`` first;
  ``@removed`` entries drop their marks.
- ``fetch``: ``GET messages/{id}/$value``, the MIME exactly as Exchange has it.
- ``after_fetch``: ``PATCH`` ``isRead``, ``POST move`` (destinationId) or ``DELETE``.
- ``advance``: the produced message ids are recorded; once every pending message of
  the round has been produced, acknowledged, acted on and recorded, the round's
  deltaLink is stored in the same transaction as the last marks.

When the deltaLink moves is the no-loss argument: it is never stored while a message of
its round is not yet acknowledged and acted on, so a crash, a failed step or a poll
handed to another replica repeats the round from the previous link, and the marks keep
the repeat from producing anything twice. Updates (our own ``isRead``) and replays come
back as changes of messages already marked, and are skipped the same way.

A deltaLink the server no longer knows (410 Gone, or ``syncStateNotFound`` /
``resyncRequired``) starts a full round: every message in the folder is listed again,
the marks keep the produced ones from being produced again, and marks of messages that
are no longer listed are dropped.

The server's exact error (its JSON body, with ``error.code`` and ``error.message``) is
the ``server_reply`` of every :class:`StepFailed`. A 401 gets one fresh token and one
retry; a 429 or 503 is retried after its ``Retry-After``, a bounded number of times. A
link the server sends is only followed on the account's own origin, so the bearer
token never goes anywhere else.

Tokens come from a :class:`BearerTokens` the caller injects (:class:`AccountTokens` on
the OAuth2 token layer, ``oauth_tokens.TokenBroker``); this module never talks to an
identity provider.
"""

from __future__ import annotations

import contextvars
import email.utils
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import quote, urlsplit

import httpx
import structlog
from prometheus_client import Counter

from services.fetcher.account import Account
from services.fetcher.core import PrefixedSourceIds
from services.fetcher.mail_connection import tls_context
from services.fetcher.mail_source import MailServerError

log = structlog.get_logger(__name__)

THROTTLED = Counter("mailintake_fetcher_graph_throttled_total", "Graph requests answered 429 or 503 and retried", ["account_id"])
RESYNCS = Counter("mailintake_fetcher_graph_resyncs_total", "Graph delta rounds restarted because the server rejected the stored deltaLink", ["account_id"])

API_VERSION = "v1.0"
SOURCE_IDS = PrefixedSourceIds("graph:")
DEFAULT_PAGE_SIZE = 100
#: Requests in flight at once per mailbox: Exchange Online's limit per application and mailbox.
MAILBOX_CONCURRENCY = 4
#: Retries of one request answered 429 or 503 before the poll gives up.
THROTTLE_RETRIES = 5
#: The longest Retry-After a poll waits out; a longer one ends the poll (the next one retries).
MAX_RETRY_AFTER_SECONDS = 30.0
#: Graph's well-known folder names (mailFolder resource), usable instead of a folder id.
WELL_KNOWN_FOLDERS = frozenset({
    "archive", "clutter", "conflicts", "conversationhistory", "deleteditems", "drafts", "inbox", "junkemail",
    "localfailures", "msgfolderroot", "outbox", "recoverableitemsdeletions", "scheduled", "searchfolders",
    "sentitems", "serverfailures", "syncissues",
})
#: Error codes by which Graph says a delta token is dead and the folder must be listed again.
RESYNC_CODES = frozenset({"syncstatenotfound", "resyncrequired"})
#: Bodies longer than this are cut in a StepFailed (an error body is small; an HTML proxy page is not).
REPLY_LIMIT = 2000


class BearerTokens(Protocol):
    """Access tokens for one account, from the OAuth2 token layer.

    Both raise :class:`StepFailed` with step ``token`` and the identity provider's exact
    error when no token can be had.
    """

    def token(self) -> str:
        """A bearer token believed valid (cached until shortly before it expires)."""
        ...

    def refresh(self) -> str:
        """A new token; the server refused the one :meth:`token` gave."""
        ...


class TokenSource(Protocol):
    """The OAuth2 token layer as this module uses it (:class:`~services.fetcher.oauth_tokens.TokenBroker`)."""

    def access_token(self, account: Account) -> str: ...

    def forget(self, account_id: str) -> None: ...


class AccountTokens:
    """:class:`BearerTokens` of one account from the process's shared token layer."""

    def __init__(self, source: TokenSource, account: Account) -> None:
        self._source, self._account = source, account

    def token(self) -> str:
        return self._source.access_token(self._account)

    def refresh(self) -> str:
        # The cached token was refused (expired early, revoked): drop it and ask the provider.
        self._source.forget(self._account.id)
        return self._source.access_token(self._account)


# --- pure parts ----------------------------------------------------------------------------


def graph_origin(account: Account) -> str:
    host = f"[{account.host}]" if ":" in account.host else account.host
    return f"https://{host}" + ("" if account.port == 443 else f":{account.port}")


def folder_names(path: str) -> list[str]:
    names = [part for part in path.strip("/").split("/") if part]
    if not names:
        raise ValueError("empty folder path")
    return names


def odata_string(text: str) -> str:
    """``text`` as an OData string literal (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"


source_id = SOURCE_IDS.source_id
message_id_of = SOURCE_IDS.native_id


@dataclass(frozen=True)
class DeltaPage:
    entries: list[tuple[str, str | None]]
    """(message id, receivedDateTime) in the server's order; None for an ``@removed`` entry."""
    next_link: str | None
    delta_link: str | None


def parse_delta_page(document: object) -> DeltaPage:
    """One page of a delta response; ValueError names what is missing."""
    if not isinstance(document, dict) or not isinstance(document.get("value"), list):
        raise ValueError("no 'value' array")
    entries: list[tuple[str, str | None]] = []
    for entry in document["value"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise ValueError(f"an entry without an id: {str(entry)[:200]}")
        entries.append((entry["id"], None if "@removed" in entry else str(entry.get("receivedDateTime") or "")))
    next_link, delta_link = document.get("@odata.nextLink"), document.get("@odata.deltaLink")
    if not (next_link or delta_link):
        raise ValueError("neither @odata.nextLink nor @odata.deltaLink")
    return DeltaPage(entries, next_link, delta_link)


@dataclass
class DeltaRound:
    """What one delta round said about the folder, replays merged (the latest entry wins)."""

    full: bool
    """True for an initial round (every message in the folder listed), False for changes since a deltaLink."""
    listed: dict[str, str]
    """message id -> receivedDateTime, in listing order."""
    removed: set[str]
    delta_link: str | None = None

    def add(self, page: DeltaPage) -> None:
        for message_id, received in page.entries:
            if received is None:
                self.listed.pop(message_id, None)
                self.removed.add(message_id)
            else:
                self.removed.discard(message_id)
                self.listed.setdefault(message_id, received)


def plan_round(delta: DeltaRound, produced: set[str]) -> tuple[list[str], set[str]]:
    """(message ids to produce, oldest first; marks to drop because their messages left the folder)."""
    # sorted() is stable: messages received in the same second keep their listing order.
    ordered = sorted(delta.listed, key=lambda message_id: delta.listed[message_id])
    pending = [message_id for message_id in ordered if message_id not in produced]
    vanished = produced - set(delta.listed) if delta.full else produced & delta.removed
    return pending, vanished


def retry_after_seconds(value: str | None, attempt: int, now: datetime | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): the server's ``Retry-After``
    (seconds or an HTTP date), else 1, 2, 4, ... seconds."""
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            pass
        else:
            return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return float(2 ** (attempt - 1))


def server_reply(response: httpx.Response) -> str:
    """The status line and the body exactly as the server sent them (Graph's JSON error)."""
    body = response.text.strip()
    if len(body) > REPLY_LIMIT:
        body = body[:REPLY_LIMIT] + "..."
    return f"HTTP {response.status_code} {response.reason_phrase}: {body}".rstrip(": ")


def error_code(response: httpx.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    return error.get("code") if isinstance(error, dict) and isinstance(error.get("code"), str) else None


def _origin_of(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port or 443
    except ValueError:
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# --- durable state --------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredDeltaLink:
    folder_id: str
    delta_link: str


class DeltaState(Protocol):
    """Durable per account and folder: the produced message ids and the last complete round's deltaLink."""

    def delta_link(self, account_id: str, folder: str) -> StoredDeltaLink | None: ...

    def produced(self, account_id: str, folder: str) -> set[str]: ...

    def forget(self, account_id: str, folder: str, message_ids: set[str]) -> None: ...

    def record(self, account_id: str, folder: str, message_ids: Sequence[str], delta_link: StoredDeltaLink | None) -> None:
        """Record the marks and, when given, the deltaLink, in one transaction."""
        ...


class InMemoryDeltaState:
    """State that lasts as long as the process: for tests and one-off checks, never for the service."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, str], StoredDeltaLink] = {}
        self._produced: dict[tuple[str, str], set[str]] = {}

    def delta_link(self, account_id: str, folder: str) -> StoredDeltaLink | None:
        return self._links.get((account_id, folder))

    def produced(self, account_id: str, folder: str) -> set[str]:
        return set(self._produced.get((account_id, folder), ()))

    def forget(self, account_id: str, folder: str, message_ids: set[str]) -> None:
        self._produced.get((account_id, folder), set()).difference_update(message_ids)

    def record(self, account_id: str, folder: str, message_ids: Sequence[str], delta_link: StoredDeltaLink | None) -> None:
        self._produced.setdefault((account_id, folder), set()).update(message_ids)
        if delta_link is not None:
            self._links[(account_id, folder)] = delta_link


# --- HTTP ---------------------------------------------------------------------------------


class _SyncReset(Exception):
    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class GraphSession:
    """Authenticated requests to one account's Graph endpoint: token refresh on 401,
    Retry-After on 429 and 503, each failure a :class:`StepFailed` with the exact reply."""

    def __init__(
        self,
        account: Account,
        tokens: BearerTokens,
        timeout: float,
        *,
        throttle_retries: int = THROTTLE_RETRIES,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
        source_address: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.origin = graph_origin(account)
        self._account_id = account.id
        self.throttled = 0
        """Requests answered 429 or 503 and retried, over the session."""
        self._tokens = tokens
        self._token: str | None = None
        self._refresh_lock = threading.Lock()
        self._timeout = timeout
        self._throttle_retries = throttle_retries
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        transport = httpx.HTTPTransport(verify=tls_context(account), local_address=source_address)
        self._http = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False,
                                  headers={"Accept": "application/json"})

    def url(self, path: str) -> str:
        return f"{self.origin}/{API_VERSION}/{path}"

    def request(self, step: str, method: str, url: str, *, json: object = None,
                headers: Mapping[str, str] | None = None) -> httpx.Response:
        """The server's response (any status but 401, 429, 503, which are handled here)."""
        parts = urlsplit(url)
        if _origin_of(url) != _origin_of(self.origin):
            raise MailServerError(step, None, f"the server linked to {parts.scheme}://{parts.netloc}, not {self.origin};"
                                              " the access token is not sent there")
        refreshed, throttled = False, 0
        while True:
            if self._token is None:
                self._token = self._tokens.token()
            sent_token = self._token
            response = self._send(step, method, url, json, headers, sent_token)
            if response.status_code == 401:
                if refreshed:
                    raise MailServerError("authentication", server_reply(response), "the server refused a freshly issued access token")
                refreshed = True
                with self._refresh_lock:
                    # Requests in flight together all see the old token refused: one refresh serves them all.
                    if self._token == sent_token:
                        log.info("graph.token_refused", status=401, code=error_code(response))
                        self._token = self._tokens.refresh()
                continue
            if response.status_code in (429, 503):
                throttled += 1
                wait = retry_after_seconds(response.headers.get("Retry-After"), throttled)
                if throttled > self._throttle_retries:
                    raise MailServerError(step, server_reply(response), f"throttled: HTTP {response.status_code} {throttled} times"
                                          " in a row; the next poll tries again")
                if wait > self._max_retry_after:
                    raise MailServerError(step, server_reply(response), f"throttled: the server asks to wait {wait:g} s, longer"
                                          f" than the {self._max_retry_after:g} s a poll waits; the next poll tries again")
                self.throttled += 1
                THROTTLED.labels(self._account_id).inc()
                log.warning("graph.throttled", status=response.status_code, retry_after=wait, attempt=throttled)
                self._sleep(wait)
                continue
            return response

    def _send(self, step: str, method: str, url: str, json: object, headers: Mapping[str, str] | None,
              token: str) -> httpx.Response:
        try:
            return self._http.request(method, url, json=json, headers={"Authorization": f"Bearer {token}", **(headers or {})})
        except httpx.TimeoutException:
            raise MailServerError(step, None, f"no answer within {self._timeout:g} s") from None
        except httpx.ConnectError as exc:
            if (tls := _ssl_error(exc)) is not None:
                detail = getattr(tls, "verify_message", None) or tls.reason or str(tls)
                raise MailServerError("tls", None, f"TLS error: {detail}") from None
            raise MailServerError("connect", None, str(exc) or type(exc).__name__) from None
        except httpx.HTTPError as exc:
            raise MailServerError(step, None, f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self._http.close()


def expect(step: str, response: httpx.Response, *ok: int, explanation: str | None = None) -> httpx.Response:
    if response.status_code not in ok:
        if response.status_code == 403 and explanation is None:
            explanation = ("the token's identity may not open this mailbox (a shared mailbox needs full access for the"
                           " delegate, or an application permission for the app)")
        raise MailServerError(step, server_reply(response), explanation)
    return response


def json_of(step: str, response: httpx.Response) -> dict:
    try:
        document = response.json()
    except ValueError:
        raise MailServerError(step, server_reply(response), "the answer is not JSON") from None
    if not isinstance(document, dict):
        raise MailServerError(step, server_reply(response), "the answer is not a JSON object")
    return document


# --- the mailbox -----------------------------------------------------------------------------


class GraphMailbox:
    """One account's folder over Microsoft Graph.

    Construct, then :meth:`open` (which talks to the server), as the other sources do.
    """

    def __init__(
        self,
        account: Account,
        tokens: BearerTokens,
        state: DeltaState,
        timeout: float,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        concurrency: int = MAILBOX_CONCURRENCY,
        throttle_retries: int = THROTTLE_RETRIES,
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
        source_address: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.account = account
        self._concurrency = max(1, min(concurrency, MAILBOX_CONCURRENCY))
        self._pool: ThreadPoolExecutor | None = None
        self.resyncs = 0
        """Delta rounds restarted from scratch because the server rejected the stored deltaLink."""
        self._state = state
        self._page_size = page_size
        self._user = "users/" + quote(account.username, safe="@")
        self._session = GraphSession(account, tokens, timeout, throttle_retries=throttle_retries,
                                     max_retry_after=max_retry_after, source_address=source_address, sleep=sleep)
        self._folder_id: str | None = None
        self._target_id: str | None = None
        self._round: DeltaRound | None = None
        self._outstanding: set[str] = set()

    @property
    def session(self) -> GraphSession:
        return self._session

    def open(self) -> GraphMailbox:
        try:
            self.select_folder()
        except BaseException:
            self.close()
            raise
        return self

    # --- steps the connection check shows one by one ------------------------------------------
    def verify_mailbox(self) -> str:
        """One authenticated request on the mailbox (its Inbox), so a refused token or mailbox shows as such."""
        response = self._session.request("authentication", "GET", self._session.url(f"{self._user}/mailFolders/inbox?$select=id"))
        expect("authentication", response, 200)
        return f"token accepted; mailbox {self.account.username} open"

    def select_folder(self) -> int:
        """Resolve the account's folder (and a move target); return how many messages the folder holds."""
        folder = self._resolve_folder(self.account.folder)
        self._folder_id = folder["id"]
        if self.account.after_fetch.startswith("move:"):
            self._target_id = self._resolve_folder(self.account.after_fetch.removeprefix("move:"))["id"]
        return int(folder.get("totalItemCount") or 0)

    def _resolve_folder(self, path: str) -> dict:
        try:
            names = folder_names(path)
        except ValueError as exc:
            raise MailServerError("folder", None, str(exc)) from None
        first, rest = names[0], names[1:]
        if first.lower() in WELL_KNOWN_FOLDERS:
            url = self._session.url(f"{self._user}/mailFolders/{first.lower()}")
            folder = json_of("folder", expect("folder", self._session.request("folder", "GET", url), 200))
        else:
            folder = self._child(None, first, path)
        for name in rest:
            folder = self._child(folder["id"], name, path)
        if not isinstance(folder.get("id"), str):
            raise MailServerError("folder", None, f"the folder {path!r} came back without an id")
        return folder

    def _child(self, parent_id: str | None, name: str, path: str) -> dict:
        below = f"/{quote(parent_id, safe='')}/childFolders" if parent_id else ""
        url = self._session.url(f"{self._user}/mailFolders{below}?$filter=" + quote(f"displayName eq {odata_string(name)}"))
        found = json_of("folder", expect("folder", self._session.request("folder", "GET", url), 200)).get("value") or []
        if not found:
            where = "at the top of the mailbox" if parent_id is None else "in its parent folder"
            raise MailServerError("folder", None, f"no folder named {name!r} {where} (folder path {path!r})")
        return found[0]

    # --- MailSource -------------------------------------------------------------------------
    def pending(self) -> list[str]:
        """Source ids of the messages in the folder not produced yet, oldest first."""
        account, folder = self.account.id, self.account.folder
        delta = self._list_round()
        produced = self._state.produced(account, folder)
        pending, vanished = plan_round(delta, produced)
        if vanished:
            self._state.forget(account, folder, vanished)
        self._round, self._outstanding = delta, set(pending)
        if not pending:
            self._state.record(account, folder, [], self._delta_link())
        return [source_id(message_id) for message_id in pending]

    def _delta_link(self) -> StoredDeltaLink:
        assert self._round is not None and self._round.delta_link and self._folder_id
        return StoredDeltaLink(self._folder_id, self._round.delta_link)

    def _initial_delta_url(self) -> str:
        return self._session.url(f"{self._user}/mailFolders/{quote(self._folder_id or '', safe='')}/messages/delta"
                                 "?$select=receivedDateTime")

    def _list_round(self) -> DeltaRound:
        stored = self._state.delta_link(self.account.id, self.account.folder)
        if stored is None or stored.folder_id != self._folder_id:
            return self._read_round(self._initial_delta_url(), full=True)
        try:
            return self._read_round(stored.delta_link, full=False)
        except _SyncReset as reset:
            self.resyncs += 1
            RESYNCS.labels(self.account.id).inc()
            log.warning("graph.delta_resync", reason=reset.reply)
            return self._read_round(self._initial_delta_url(), full=True)

    def _read_round(self, url: str, *, full: bool) -> DeltaRound:
        delta = DeltaRound(full=full, listed={}, removed=set())
        prefer = {"Prefer": f"odata.maxpagesize={self._page_size}"}
        while True:
            response = self._session.request("list", "GET", url, headers=prefer)
            code = (error_code(response) or "").lower()
            if response.status_code == 410 or (400 <= response.status_code < 500 and code in RESYNC_CODES):
                if full:
                    raise MailServerError("list", server_reply(response), "the server rejected the initial delta query")
                raise _SyncReset(server_reply(response))
            try:
                page = parse_delta_page(json_of("list", expect("list", response, 200)))
            except ValueError as exc:
                raise MailServerError("list", server_reply(response), f"unreadable delta page: {exc}") from None
            delta.add(page)
            if page.delta_link:
                delta.delta_link = page.delta_link
                return delta
            url = page.next_link or ""

    def sizes(self) -> Mapping[str, int]:
        """Graph's message resource has no size: chunks are counted in mails."""
        return {}

    def fetch(self, source_ids: Sequence[str]) -> Mapping[str, bytes]:
        """MIME bytes by source id; a message that vanished since :meth:`pending` is left out."""

        def mime(source: str) -> bytes | None:
            url = self._message_url(source, "/$value")
            response = self._session.request("fetch", "GET", url, headers={"Accept": "*/*"})
            return None if response.status_code == 404 else expect("fetch", response, 200).content

        return {source: raw for source, raw in zip(source_ids, self._each(mime, source_ids), strict=True) if raw is not None}

    def after_fetch(self, source_ids: Sequence[str]) -> None:
        """Mark read, move or delete the messages Kafka acknowledged; one already gone counts as done."""
        action = self.account.after_fetch

        def act(source: str) -> None:
            if action == "mark_seen":
                response = self._session.request("after_fetch", "PATCH", self._message_url(source), json={"isRead": True})
                ok = 200
            elif action == "delete":
                response = self._session.request("after_fetch", "DELETE", self._message_url(source))
                ok = 204
            else:
                response = self._session.request("after_fetch", "POST", self._message_url(source, "/move"),
                                                 json={"destinationId": self._target_id})
                ok = 201
            if response.status_code != 404:
                expect("after_fetch", response, ok)

        self._each(act, source_ids)

    def _each(self, call: Callable[[str], object], sources: Sequence[str]) -> list:
        """``call`` on every source, up to the mailbox's concurrency at once; results in order, the first failure raised."""
        if self._concurrency == 1 or len(sources) < 2:
            return [call(source) for source in sources]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="graph")
        # A context per request: the poll's log context (account, cycle) goes along, and one
        # context cannot be entered by two threads at once.
        futures = [self._pool.submit(contextvars.copy_context().run, call, source) for source in sources]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()

    def _message_url(self, source: str, suffix: str = "") -> str:
        return self._session.url(f"{self._user}/messages/{quote(message_id_of(source), safe='')}{suffix}")

    def advance(self, source_ids: Sequence[str]) -> None:
        """Record the marks; with the round's last pending message, its deltaLink too."""
        message_ids = [message_id_of(s) for s in source_ids]
        self._outstanding.difference_update(message_ids)
        link = self._delta_link() if self._round is not None and not self._outstanding else None
        self._state.record(self.account.id, self.account.folder, message_ids, link)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._session.close()
