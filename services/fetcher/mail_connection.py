"""TCP and TLS to a mail server, one step at a time, with the failure of each step
turned into a :class:`MailServerError` that names the step."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from services.fetcher.account import Account
from services.fetcher.core import BEARER_MECHANISMS, choose_bearer_mechanism
from services.fetcher.mail_source import MailServerError, StepFailed


def tls_context(account: Account) -> ssl.SSLContext:
    """A verifying context: the account's CA file, else the system's trust store."""
    # Verification stays on; a private CA is trusted by naming it, never by turning checks off.
    try:
        return ssl.create_default_context(cafile=str(account.ca_file) if account.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise MailServerError("tls", None, f"cannot load ca_file {account.ca_file}: {exc}") from None


@contextmanager
def network_step(step: str, timeout: float) -> Iterator[None]:
    """Turn socket and TLS errors raised inside into a :class:`MailServerError` for ``step``.

    Protocol replies are translated by the mailbox classes, which know where the
    server's text is; this only covers what the network and the TLS layer say.
    """
    try:
        yield
    except StepFailed:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise MailServerError(step, None, f"certificate verify failed: {exc.verify_message}") from None
    except ssl.SSLError as exc:
        raise MailServerError(step, None, f"TLS error: {exc.reason or exc}") from None
    except TimeoutError:
        raise MailServerError(step, None, f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise MailServerError(step, None, exc.strerror or str(exc) or type(exc).__name__) from None


def open_tcp(host: str, port: int, timeout: float, source_address: str | None) -> socket.socket:
    """A connected socket whose every later send and receive is bounded by ``timeout``."""
    with network_step("connect", timeout):
        return socket.create_connection(
            (host, port), timeout=timeout, source_address=(source_address, 0) if source_address else None
        )


def describe_tcp(sock: socket.socket) -> str:
    local, remote = sock.getsockname(), sock.getpeername()
    return f"connected to {remote[0]}:{remote[1]} from {local[0]}"


def wrap_tls(sock: socket.socket, context: ssl.SSLContext, host: str, timeout: float) -> ssl.SSLSocket:
    """Handshake on ``sock``; the certificate is verified against ``host``."""
    with network_step("tls", timeout):
        try:
            return context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise


def describe_tls(sock: ssl.SSLSocket, account: Account) -> str:
    """Protocol, cipher and whose certificate was verified against which trust anchors."""
    subject = dict(item for rdn in (sock.getpeercert() or {}).get("subject", ()) for item in rdn)
    trusted = f"ca_file {account.ca_file}" if account.ca_file else "the system trust store"
    cipher = sock.cipher()
    return (
        f"{sock.version()} {cipher[0] if cipher else ''}, certificate of "
        f"{subject.get('commonName', '?')} verified against {trusted}"
    )


class MailSession:
    """What an IMAP and a POP3 session share: the account, the socket and the steps that
    do not depend on the protocol (TCP connect, implicit TLS).

    ``source_address`` binds the local end (hosts with several addresses; the tests
    use it to look like a remote client to Dovecot).

    ``access_token`` gives the OAuth2 access token of an ``oauth2_*`` account when
    authentication needs it (the fetcher's :class:`~services.fetcher.oauth_tokens.TokenBroker`,
    or the token the connection check obtained in its own step); ``bearer_mechanisms``
    is the order in which XOAUTH2 and OAUTHBEARER are tried among those the server offers.
    """

    def __init__(
        self,
        account: Account,
        timeout: float,
        *,
        source_address: str | None = None,
        access_token: Callable[[], str] | None = None,
        bearer_mechanisms: Sequence[str] = BEARER_MECHANISMS,
    ) -> None:
        self.account = account
        self._timeout = timeout
        self._source_address = source_address
        self._access_token = access_token
        self._bearer_mechanisms = tuple(bearer_mechanisms)
        self._sock: socket.socket | None = None
        self._encrypted = False
        self.capability_line = ""

    def _bearer_mechanism(self, offered: set[str]) -> str:
        """The SASL mechanism for the account's token, or the refusal to send it (before anything is sent)."""
        mechanism = choose_bearer_mechanism(offered, self._bearer_mechanisms)
        if mechanism is None:
            raise MailServerError(
                "authentication",
                self.capability_line,
                f"The account authenticates with {self.account.authentication.value}, and the server offers none of "
                f"the SASL mechanisms that carry an OAuth2 token ({', '.join(self._bearer_mechanisms)}). "
                "The token was not sent.",
            )
        if not self._encrypted:
            raise MailServerError(
                "authentication",
                None,
                "The access token was not sent: with security none it would travel unencrypted, and anyone "
                "who reads it can use it until it expires. Use tls or starttls.",
            )
        return mechanism

    def _bearer_token(self) -> str:
        if self._access_token is None:
            raise MailServerError(
                "token", None, f"The account authenticates with {self.account.authentication.value}, but no token source was given."
            )
        return self._access_token()


    def connect(self) -> str:
        self._sock = open_tcp(self.account.host, self.account.port, self._timeout, self._source_address)
        return describe_tcp(self._sock)

    def _implicit_tls(self, context: ssl.SSLContext) -> str:
        self._sock = wrap_tls(self._require_socket(), context, self.account.host, self._timeout)
        self._encrypted = True
        return describe_tls(self._sock, self.account)

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise RuntimeError("connect() first")
        return self._sock


def bearer_refusal(mechanism: str, challenges: Sequence[bytes]) -> str:
    """Our sentence on a refused token, quoting the server's SASL error challenge (RFC 7628
    status JSON) exactly when it sent one."""
    said = [c.decode("utf-8", "replace") for c in challenges if c]
    if said:
        return f"The server refused the OAuth2 token ({mechanism}); its SASL error challenge was {' '.join(said)}."
    return f"The server refused the OAuth2 token ({mechanism})."
