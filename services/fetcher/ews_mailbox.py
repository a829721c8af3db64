"""Exchange Web Services edge of the fetcher (exchangelib), a :class:`MailSource`.

What a poll does, in EWS operations:

- ``pending``: FindItem on the folder, oldest first (``DateTimeReceived`` ascending),
  page by page (IndexedPageItemView), minus the items already produced. Ascending order
  keeps offsets stable while new mail arrives during paging; an item deleted by someone
  else mid-listing can shift one item out of this poll, and the next poll finds it.
- ``fetch``: GetItem with ``MimeContent`` - the mail exactly as Exchange has it; nothing
  on the server changes.
- ``after_fetch``: UpdateItem (``IsRead``), MoveItem, or DeleteItem (``SoftDelete``:
  gone from the folder as after an IMAP expunge, yet recoverable by an administrator
  from Recoverable Items for the retention period).
- ``advance``: the produced item ids are recorded (:class:`ProducedItemMarks`); an id
  whose item left the folder is forgotten at the next listing.

The durable marks are item ids rather than the read flag, so a mail someone opened in
Outlook before the fetcher polled still becomes a ticket.

Authentication (``Account.prevent_ntlm``, on by default):

- the server's offer is read from an unauthenticated request's ``WWW-Authenticate``
  headers, never guessed;
- ``Negotiate`` is used as Kerberos only (SPNEGO restricted to the Kerberos mechanism,
  mutual authentication required), with the process's Kerberos credentials
  (``KRB5CCNAME``, or a client keytab through ``KRB5_CLIENT_KTNAME``) when their
  principal is the account's user, else with tickets the KDC gives for the account's
  stored password (:class:`PasswordKerberos`: in memory, per principal, so accounts of
  different principals work in one process); another user's ticket is never used;
- with ``prevent_ntlm`` on nothing else is allowed: no NTLM, and no Basic either, since
  a domain that forbids NTLM wants the password to stay off the wire;
- with ``prevent_ntlm`` off: Kerberos if offered and a ticket is there, else NTLM, else
  Basic (always inside verified TLS: EWS accounts are HTTPS only).

The user name ``Domain\\User\\Alias`` logs in as ``Domain\\User`` and opens the shared
mailbox ``Alias`` with delegate access (no impersonation); an alias without ``@`` is
resolved to its address with ResolveNames.

TLS is verified against ``Account.ca_file`` (else the system's trust store) through
exchangelib's hook for the HTTP adapter, ``BaseProtocol.HTTP_ADAPTER_CLS``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Protocol as TypingProtocol
from urllib.parse import urlsplit

import gssapi
import requests
import structlog
from exchangelib import (
    BASIC,
    DELEGATE,
    GSSAPI,
    NTLM,
    UTC,
    Account as ExchangeAccount,
    Build,
    Configuration,
    Credentials,
    FailFast,
    Message,
    Version,
)
from exchangelib import errors as ews_errors
from exchangelib import transport as ews_transport
from exchangelib.items import SOFT_DELETE
from exchangelib.protocol import BaseProtocol, Protocol
from requests.adapters import HTTPAdapter
from requests_gssapi import REQUIRED, HTTPSPNEGOAuth

from services.fetcher.account import Account
from services.fetcher.core import PrefixedSourceIds
from services.fetcher.mail_source import MailServerError

log = structlog.get_logger(__name__)

# exchangelib's DEBUG records carry each request's headers, Authorization included (Basic:
# the password in base64). They stay off whatever level the service logs at.
for _logger in ("exchangelib", "requests_gssapi", "requests_ntlm", "spnego"):
    logging.getLogger(_logger).setLevel(logging.INFO)

EWS_PATH = "/EWS/Exchange.asmx"
#: Exchange 2016 CU23. Naming the build pins the SOAP dialect, so exchangelib never
#: probes versions (and never sends a request we did not choose).
EXCHANGE_BUILD = Build(15, 1, 2507, 6)
KERBEROS_MECHANISM = "1.2.840.113554.1.2.2"
KERBEROS = gssapi.OID.from_int_seq(KERBEROS_MECHANISM)
SPNEGO = gssapi.OID.from_int_seq("1.3.6.1.5.5.2")
SOURCE_IDS = PrefixedSourceIds("ews:")
DEFAULT_PAGE_SIZE = 500
#: Mails per GetItem: each arrives base64-encoded inside one XML response, so a few
#: large mails already make a large response.
FETCH_BATCH = 10


# --- pure parts ----------------------------------------------------------------------


@dataclass(frozen=True)
class EwsLogin:
    """Who logs in, and whose mailbox is opened."""

    logon_name: str
    """``Domain\\User`` or ``user@domain``: the credentials."""
    mailbox: str | None
    """The shared mailbox (alias or address) reached by delegate access; None for the user's own."""

    @property
    def user_part(self) -> str:
        """The bare user name, to compare with a Kerberos principal."""
        return self.logon_name.rsplit("\\", 1)[-1].split("@", 1)[0]


def parse_ews_username(username: str) -> EwsLogin:
    """``Domain\\User\\Alias`` -> credentials ``Domain\\User`` with delegate access to ``Alias``;
    ``Domain\\User`` or ``user@domain`` -> that user's own mailbox."""
    parts = username.split("\\")
    if any(not part.strip() for part in parts) or len(parts) > 3:
        raise ValueError(f"user name {username!r} is not User, Domain\\User or Domain\\User\\SharedMailbox")
    if len(parts) == 3:
        return EwsLogin(f"{parts[0]}\\{parts[1]}", parts[2])
    return EwsLogin(username, None)


def service_endpoint(account: Account) -> str:
    host = f"[{account.host}]" if ":" in account.host else account.host
    return f"https://{host}:{account.port}{EWS_PATH}"


def offered_auth_schemes(header_values: Sequence[str]) -> list[str]:
    """Scheme names from ``WWW-Authenticate`` values, lower-cased, in offer order.

    One header may hold several challenges (``Basic realm="x", Negotiate``); an
    auth-param (``name=value``) or a quoted string is never taken for a scheme.
    """
    schemes: list[str] = []
    for value in header_values:
        for challenge in _split_outside_quotes(value):
            first = challenge.strip().split(" ", 1)[0]
            if first and "=" not in first and '"' not in first and first.lower() not in schemes:
                schemes.append(first.lower())
    return schemes


def _split_outside_quotes(value: str) -> list[str]:
    parts, current, quoted = [], [], False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


class EwsAuthUnavailable(MailServerError):
    """No authentication method is both offered by the server and allowed for the account."""


def choose_auth(offered: Sequence[str], prevent_ntlm: bool, kerberos_principal: str | None) -> str:
    """The exchangelib auth type to use; raises :class:`EwsAuthUnavailable` naming the offer."""
    offer = ", ".join(offered) or "nothing"
    if "negotiate" in offered and kerberos_principal is not None:
        return GSSAPI
    if prevent_ntlm:
        if "negotiate" in offered:
            reason = (
                "the server offers Negotiate, but there is no Kerberos ticket for the account's user"
                " (give the account its Kerberos password, kinit into KRB5CCNAME, or set"
                " KRB5_CLIENT_KTNAME to a client keytab)"
            )
        else:
            reason = f"the server offers {offer}; with prevent_ntlm only Kerberos (Negotiate) is used"
        raise EwsAuthUnavailable("authentication", None, reason)
    for scheme, auth_type in (("ntlm", NTLM), ("basic", BASIC)):
        if scheme in offered:
            return auth_type
    if "negotiate" in offered:
        raise EwsAuthUnavailable(
            "authentication", None, f"the server offers {offer}, and there is no Kerberos ticket for the account's user"
        )
    raise EwsAuthUnavailable("authentication", None, f"the server offers {offer}; usable are Negotiate (Kerberos), NTLM, Basic")


@dataclass(frozen=True)
class FolderRoute:
    """Where a folder path starts and the display names below it."""

    distinguished: str
    names: tuple[str, ...]


def folder_route(folder: str) -> FolderRoute:
    """``INBOX`` (any case) and ``Inbox/...`` start at the distinguished Inbox, so localised
    Inbox names work; any other path starts at the top of the information store."""
    names = tuple(part for part in folder.strip("/").split("/") if part)
    if not names:
        raise ValueError("empty folder path")
    if names[0].lower() == "inbox":
        return FolderRoute("inbox", names[1:])
    return FolderRoute("msgfolderroot", names)


def plan_pending(listed: Sequence[str], produced: set[str]) -> tuple[list[str], set[str]]:
    """(item ids to produce, in listing order; marks whose items left the folder)."""
    return [item_id for item_id in listed if item_id not in produced], produced - set(listed)


source_id = SOURCE_IDS.source_id
item_id_of = SOURCE_IDS.native_id


# --- durable marks ---------------------------------------------------------------------


class ProducedItemMarks(TypingProtocol):
    """Durable record of the EWS items already produced, per account and folder."""

    def produced(self, account_id: str, folder: str) -> set[str]: ...

    def record(self, account_id: str, folder: str, item_ids: Sequence[str]) -> None: ...

    def forget(self, account_id: str, folder: str, item_ids: set[str]) -> None: ...


class InMemoryItemMarks:
    """Marks that last as long as the process: for tests and one-off checks, never for the service."""

    def __init__(self) -> None:
        self._marks: dict[tuple[str, str], set[str]] = {}

    def produced(self, account_id: str, folder: str) -> set[str]:
        return set(self._marks.get((account_id, folder), ()))

    def record(self, account_id: str, folder: str, item_ids: Sequence[str]) -> None:
        self._marks.setdefault((account_id, folder), set()).update(item_ids)

    def forget(self, account_id: str, folder: str, item_ids: set[str]) -> None:
        self._marks.get((account_id, folder), set()).difference_update(item_ids)


# --- TLS trust for exchangelib ---------------------------------------------------------


class CaBundleAdapter(HTTPAdapter):
    """Verifies each EWS endpoint against the CA file registered for it (else the default trust).

    exchangelib builds its own requests sessions and mounts ``BaseProtocol.HTTP_ADAPTER_CLS``
    on each, its hook for TLS and proxy handling; the class is process-wide, hence the
    registry by endpoint. Verification is never turned off: a registered CA file only
    replaces the trust anchors.
    """

    _ca_files: dict[str, str] = {}
    _lock = threading.Lock()

    @staticmethod
    def _origin(url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 443}".lower()

    @classmethod
    def trust(cls, endpoint: str, ca_file: str) -> None:
        with cls._lock:
            cls._ca_files[cls._origin(endpoint)] = ca_file

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        ca_file = self._ca_files.get(self._origin(request.url or ""))
        if ca_file is not None and kwargs.get("verify", True) is not False:
            kwargs["verify"] = ca_file
        return super().send(request, **kwargs)


BaseProtocol.HTTP_ADAPTER_CLS = CaBundleAdapter


# --- Kerberos ---------------------------------------------------------------------------


def kerberos_principal() -> str | None:
    """The principal of this process's usable Kerberos credentials, or None."""
    try:
        credentials = gssapi.Credentials(usage="initiate", mechs=[KERBEROS])
        if credentials.lifetime is not None and credentials.lifetime <= 0:
            return None
        return str(credentials.name)
    except gssapi.exceptions.GSSError:
        return None


def password_principal(login: EwsLogin) -> str:
    """The Kerberos principal an account's password is for: ``User`` of ``Domain\\User`` in
    the default realm (a NetBIOS domain is no realm), ``user@DOMAIN`` of ``user@domain``
    (Active Directory's realm is its DNS domain in capitals)."""
    user, _, domain = login.logon_name.rsplit("\\", 1)[-1].partition("@")
    return f"{user}@{domain.upper()}" if domain else user


class PasswordKerberos:
    """Kerberos credentials got from the KDC with accounts' passwords, one set per principal.

    The tickets stay in memory (no credential cache file, no kinit, nothing another
    account's login could pick up), so accounts of different principals work side by side
    in one process. A set is reused until shortly before it expires, or until the
    password changes, so a poll costs the KDC nothing. A refusal is remembered as long,
    unless the password changes: an account without Kerberos (NTLM allowed) must not send
    the KDC, or a DNS lookup for its realm, a request every poll.
    """

    RENEW_BEFORE_SECONDS = 300
    RETRY_REFUSED_SECONDS = 300

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[bytes, gssapi.Credentials]] = {}
        self._refused: dict[str, tuple[bytes, float, gssapi.exceptions.GSSError]] = {}

    def credentials(self, principal: str, password: str) -> gssapi.Credentials:
        """Raises ``gssapi.exceptions.GSSError`` with the KDC's refusal (wrong password, unknown principal)."""
        digest = hashlib.sha256(password.encode("utf-8")).digest()
        with self._lock:
            held, refused = self._held.get(principal), self._refused.get(principal)
        if held is not None and held[0] == digest and (held[1].lifetime or 0) > self.RENEW_BEFORE_SECONDS:
            return held[1]
        if refused is not None and refused[0] == digest and time.monotonic() - refused[1] < self.RETRY_REFUSED_SECONDS:
            raise refused[2]
        try:
            credentials = self._acquire(principal, password)
        except gssapi.exceptions.GSSError as exc:
            with self._lock:
                self._refused[principal] = (digest, time.monotonic(), exc)
            raise
        with self._lock:
            self._held[principal] = (digest, credentials)
            self._refused.pop(principal, None)
        return credentials

    @staticmethod
    def _acquire(principal: str, password: str) -> gssapi.Credentials:
        name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
        # SPNEGO needs credentials of its own to wrap the Kerberos ones (acquired for
        # Kerberos alone it "cannot find mechanisms to negotiate"); it may offer Kerberos only.
        acquired = gssapi.raw.acquire_cred_with_password(
            name, password.encode("utf-8"), usage="initiate", mechs=[KERBEROS, SPNEGO]
        )
        gssapi.raw.set_neg_mechs(acquired.creds, [KERBEROS])
        return gssapi.Credentials(acquired.creds)


PASSWORD_KERBEROS = PasswordKerberos()


class KerberosOnlyNegotiate(HTTPSPNEGOAuth):
    """SPNEGO that can only ever choose Kerberos (even where gss-ntlmssp is installed),
    with mutual authentication: the server proves it holds the service key. Without
    ``credentials``, the process's own (credential cache or client keytab)."""

    def __init__(self, credentials: gssapi.Credentials | None = None) -> None:
        super().__init__(
            mutual_authentication=REQUIRED, creds=credentials or gssapi.Credentials(usage="initiate", mechs=[KERBEROS])
        )


# exchangelib makes its GSSAPI sessions from this map (it registers requests-gssapi there
# itself); ours replaces it, so "gssapi" in this process always means Kerberos-only Negotiate.
ews_transport.AUTH_TYPE_MAP[GSSAPI] = KerberosOnlyNegotiate


class KerberosTickets(Credentials):
    """Whose Kerberos tickets an exchangelib configuration uses; no password goes with it.

    exchangelib keeps one protocol, with its HTTP sessions, per endpoint and credentials:
    accounts of different principals on one server must not share "no credentials", or
    one would be served the other's sessions.
    """

    def __init__(self, principal: str) -> None:
        super().__init__(principal, "")


def kerberos_auth_type(principal: str, tickets: gssapi.Credentials) -> str:
    """An exchangelib auth type for Kerberos-only Negotiate with ``tickets``.

    exchangelib creates each session's auth from AUTH_TYPE_MAP; credentials of one's own
    need an entry of their own: one per principal, replaced when its tickets are renewed.
    """
    auth_type = f"{GSSAPI}:{principal}"

    def negotiate(**_login: str) -> KerberosOnlyNegotiate:
        # exchangelib hands over the KerberosTickets' name and empty password; the tickets are the login.
        return KerberosOnlyNegotiate(tickets)

    ews_transport.AUTH_TYPE_MAP[auth_type] = negotiate
    return auth_type


# --- errors -----------------------------------------------------------------------------


@contextmanager
def ews_step(step: str) -> Iterator[None]:
    """Turn what exchangelib raises inside into a :class:`MailServerError` for ``step``."""
    try:
        yield
    except MailServerError:
        raise
    except ews_errors.UnauthorizedError as exc:
        raise MailServerError(step, None, f"the server refused the credentials ({exc})") from None
    except ews_errors.ResponseMessageError as exc:
        raise MailServerError(step, f"{type(exc).__name__}: {exc}") from None
    except ews_errors.TransportError as exc:
        raise MailServerError(step, None, str(exc)) from None
    except requests.exceptions.SSLError as exc:
        raise MailServerError("tls", None, f"TLS error: {exc}") from None
    except requests.exceptions.RequestException as exc:
        raise MailServerError(step, None, f"{type(exc).__name__}: {exc}") from None
    except ews_errors.EWSError as exc:
        raise MailServerError(step, None, f"{type(exc).__name__}: {exc}") from None


def _raise_first_error(step: str, results: Sequence[object], ignore: tuple[type[Exception], ...] = ()) -> None:
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, ignore):
            raise MailServerError(step, f"{type(result).__name__}: {result}")


def _gss_text(error: gssapi.exceptions.GSSError) -> str:
    """The mechanism's words (the KDC's refusal), without GSSAPI's generic major status."""
    try:
        minor = "; ".join(error.get_all_statuses(error.min_code, False))
    except Exception:  # noqa: BLE001 - the full message then
        minor = ""
    return minor.strip() or str(error)


# --- the mailbox -------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthOffer:
    """The server's answer to an unauthenticated request, as it sent it."""

    status: int
    reason: str
    challenges: tuple[str, ...]
    """The ``WWW-Authenticate`` header values, in order."""

    @property
    def schemes(self) -> list[str]:
        return offered_auth_schemes(self.challenges)

    @property
    def server_reply(self) -> str:
        """``HTTP 401 Unauthorized; WWW-Authenticate: NTLM; WWW-Authenticate: Negotiate``."""
        return "; ".join([f"HTTP {self.status} {self.reason}".rstrip(), *(f"WWW-Authenticate: {c}" for c in self.challenges)])


def probe_auth_offer(endpoint: str, timeout: float) -> AuthOffer:
    """What the server answers an unauthenticated POST (an empty SOAP envelope)."""
    session = BaseProtocol.raw_session(endpoint)
    try:
        with ews_step("connect"):
            response = session.post(
                endpoint,
                data=b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>',
                allow_redirects=False,
                timeout=timeout,
            )
        response.close()
    finally:
        session.close()
    return AuthOffer(response.status_code, response.reason or "", tuple(response.raw.headers.getlist("WWW-Authenticate")))


def probe_auth_schemes(endpoint: str, timeout: float) -> list[str]:
    """The schemes the server offers to an unauthenticated request; anything but a 401 is refused."""
    offer = probe_auth_offer(endpoint, timeout)
    if offer.status != 401:
        raise MailServerError(
            "authentication", offer.server_reply, f"the server answered {offer.status} without asking to authenticate; refusing it"
        )
    return offer.schemes


class EwsMailbox:
    """One EWS session on one folder of one mailbox of one account.

    Construct, then :meth:`open` (which talks to the server), as the other sources do.
    """

    def __init__(
        self,
        account: Account,
        marks: ProducedItemMarks,
        timeout: float,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        self.account = account
        self.auth_type: str | None = None
        self.offered: list[str] = []
        """The schemes the server offered, lower-cased (set by :meth:`authenticate`)."""
        self._delegate = False
        self._marks = marks
        self._timeout = timeout
        self._page_size = page_size
        self._change_keys: dict[str, str | None] = {}
        self._targets: dict[str, object] = {}
        self._config: Configuration | None = None

    def open(self) -> EwsMailbox:
        """Choose the authentication, log in, open the mailbox and its folder."""
        self.authenticate()
        # Logged here, not in authenticate(): the connection check calls that too, and its
        # output (--json) must be the report alone.
        log.info("ews.authenticated", auth=self.auth_type, offered=self.offered, delegate=self._delegate)
        try:
            self.select_folder()
        except BaseException:
            self.close()
            raise
        return self

    def authenticate(self, offered: Sequence[str] | None = None) -> str:
        """Choose the authentication among ``offered`` (probed when None), log in and open
        the mailbox; return the scheme and whose mailbox, for the connection check."""
        account = self.account
        try:
            login = parse_ews_username(account.username)
        except ValueError as exc:
            raise MailServerError("authentication", None, str(exc)) from None
        endpoint = service_endpoint(account)
        if account.ca_file is not None:
            CaBundleAdapter.trust(endpoint, str(account.ca_file))
        if offered is None:
            offered = probe_auth_schemes(endpoint, self._timeout)
        principal, session_auth_type, no_ticket = None, GSSAPI, []
        if "negotiate" in offered:
            # The process's own ticket when it is the account's user's (kinit, client keytab);
            # else one got with the account's password; never another user's ticket.
            principal = kerberos_principal()
            if principal is not None and principal.split("@", 1)[0].lower() != login.user_part.lower():
                no_ticket.append(f"the process's ticket is for {principal}, not for {login.logon_name}")
                principal = None
            password = account.secret_password()
            if principal is None and password:
                wanted = password_principal(login)
                try:
                    tickets = PASSWORD_KERBEROS.credentials(wanted, password)
                except gssapi.exceptions.GSSError as exc:
                    no_ticket.append(f"the KDC gave none for {wanted} with the account's password: {_gss_text(exc)}")
                else:
                    principal = str(tickets.name)
                    session_auth_type = kerberos_auth_type(principal, tickets)
        try:
            auth_type = choose_auth(offered, account.prevent_ntlm, principal)
        except EwsAuthUnavailable as exc:
            if no_ticket:
                raise EwsAuthUnavailable(exc.step, exc.server_reply, "; ".join([exc.explanation or "", *no_ticket])) from None
            raise
        if no_ticket:
            log.warning("ews.no_kerberos_ticket", reasons=no_ticket, using=auth_type)
        if auth_type != GSSAPI:
            credentials = Credentials(login.logon_name, account.secret_password())
        else:
            credentials = None if session_auth_type == GSSAPI else KerberosTickets(principal)
        self.auth_type = auth_type
        self._config = Configuration(
            service_endpoint=endpoint,
            credentials=credentials,
            auth_type=session_auth_type if auth_type == GSSAPI else auth_type,
            version=Version(EXCHANGE_BUILD),
            retry_policy=FailFast(),
            max_connections=1,
        )
        self.offered, self._delegate = list(offered), login.mailbox is not None
        try:
            with ews_step("authentication"):
                protocol = Protocol(config=self._config)
                protocol.TIMEOUT = self._timeout
                address = self._mailbox_address(protocol, login)
            with ews_step("open mailbox"):
                self._ews = ExchangeAccount(
                    primary_smtp_address=address,
                    config=self._config,
                    autodiscover=False,
                    access_type=DELEGATE,
                    default_timezone=UTC,
                    locale="en_US",
                )
        except BaseException:
            self.close()
            raise
        how = {GSSAPI: f"Kerberos (Negotiate) as {principal}", NTLM: "NTLM", BASIC: "Basic"}[auth_type]
        if auth_type != GSSAPI:
            how += f" as {login.logon_name}"
        return f"{how}; mailbox {address}" + (" (delegate access)" if login.mailbox else "")

    def verify_login(self) -> None:
        """One authenticated request (ResolveNames of the mailbox), so that a refused login
        shows as such; :meth:`authenticate` sends none when the user name is an address."""
        with ews_step("authentication"):
            self._ews.protocol.resolve_names([self._ews.primary_smtp_address])

    def select_folder(self) -> int:
        """Find the account's folder (GetFolder / FindFolder); return how many items it holds."""
        with ews_step(f"select folder {self.account.folder!r}"):
            self._folder = self._resolve_folder(self.account.folder)
        return int(self._folder.total_count or 0)

    @staticmethod
    def _mailbox_address(protocol: Protocol, login: EwsLogin) -> str:
        name = login.mailbox or login.logon_name.rsplit("\\", 1)[-1]
        if "@" in name:
            return name
        results = protocol.resolve_names([name])
        addresses = [r.email_address for r in results if not isinstance(r, Exception) and r.email_address]
        errors = [r for r in results if isinstance(r, Exception)]
        if len(addresses) != 1:
            found = ", ".join(addresses) or (f"{type(errors[0]).__name__}: {errors[0]}" if errors else "nothing")
            raise MailServerError("open mailbox", None, f"the name {name!r} resolves to {found}; give the SMTP address instead")
        return addresses[0]

    def _resolve_folder(self, path: str):  # noqa: ANN202 - an exchangelib folder
        route = folder_route(path)
        folder = self._ews.inbox if route.distinguished == "inbox" else self._ews.msg_folder_root
        for name in route.names:
            # `//` looks up one level by display name (FindFolder, Shallow) without loading the whole tree.
            folder = folder // name
        return folder

    # --- MailSource ----------------------------------------------------------------
    def pending(self) -> list[str]:
        """Source ids of the mails in the folder not produced yet, oldest first."""
        with ews_step("list"):
            query = self._folder.all().order_by("datetime_received").only("datetime_received")
            query.page_size = self._page_size
            listed = []
            for item in query:
                if isinstance(item, Exception):
                    raise MailServerError("list", f"{type(item).__name__}: {item}")
                self._change_keys[item.id] = item.changekey
                listed.append(item.id)
        produced = self._marks.produced(self.account.id, self.account.folder)
        pending, vanished = plan_pending(listed, produced)
        if vanished:
            self._marks.forget(self.account.id, self.account.folder, vanished)
        return [source_id(item_id) for item_id in pending]

    def sizes(self) -> Mapping[str, int]:
        """None told beforehand: chunks are counted in mails."""
        return {}

    def fetch(self, source_ids: Sequence[str]) -> Mapping[str, bytes]:
        """MIME bytes by source id; an item that vanished since :meth:`pending` is left out."""
        ids = [(item_id_of(s), self._change_keys.get(item_id_of(s))) for s in source_ids]
        mails: dict[str, bytes] = {}
        with ews_step("fetch"):
            results = list(self._ews.fetch(ids=ids, only_fields=["mime_content"], chunk_size=FETCH_BATCH))
        for (item_id, _), result in zip(ids, results, strict=True):
            if isinstance(result, ews_errors.ErrorItemNotFound):
                continue
            if isinstance(result, Exception):
                raise MailServerError("fetch", f"{type(result).__name__}: {result}")
            self._change_keys[item_id] = result.changekey
            mails[source_id(item_id)] = bytes(result.mime_content)
        return mails

    def after_fetch(self, source_ids: Sequence[str]) -> None:
        """Apply the account's after-fetch action to mails Kafka has acknowledged.

        An item already gone (another client, or an earlier attempt that was not recorded)
        counts as done, so repeating this is harmless.
        """
        ids = [(item_id_of(s), self._change_keys.get(item_id_of(s))) for s in source_ids]
        if not ids:
            return
        action = self.account.after_fetch
        gone = (ews_errors.ErrorItemNotFound,)
        with ews_step("after_fetch"):
            if action == "mark_seen":
                updates = [(Message(account=self._ews, id=i, changekey=ck, is_read=True), ["is_read"]) for i, ck in ids]
                results = self._ews.bulk_update(items=updates)
            elif action == "delete":
                results = self._ews.bulk_delete(ids=ids, delete_type=SOFT_DELETE)
            else:
                results = self._ews.bulk_move(ids=ids, to_folder=self._target(action.removeprefix("move:")))
        _raise_first_error("after_fetch", results, ignore=gone)

    def _target(self, path: str):  # noqa: ANN202 - an exchangelib folder
        if path not in self._targets:
            self._targets[path] = self._resolve_folder(path)
        return self._targets[path]

    def advance(self, source_ids: Sequence[str]) -> None:
        self._marks.record(self.account.id, self.account.folder, [item_id_of(s) for s in source_ids])

    def close(self) -> None:
        """Close the HTTP sessions and drop exchangelib's cached protocol for this login, so
        the next poll starts clean (fresh authentication, no stale session)."""
        config = self._config
        if config is None:
            return
        with suppress(Exception):
            Protocol[config].close()
        with suppress(KeyError):
            del Protocol[config]
