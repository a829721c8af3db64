"""The sender's SMTP edge: one submission connection, opened on first use and reused.

Every outcome is reported with the server's exact reply (code and text as it sent
them; smtplib joins the lines of a multi-line reply with LF), so the outbox row
shows why a mail did not go out.

A transport logs in with the service's own SMTP login, or, for an OAuth2 mail account,
with SASL XOAUTH2 (or OAUTHBEARER, whichever the server offers) and the account's
access token (``bearer``).
"""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage

from services.fetcher.core import choose_bearer_mechanism, sasl_bearer, sasl_bearer_abort
from services.fetcher.mail_source import StepFailed
from services.sender.core import ClaimedMail, Delivered, NotDelivered
from services.sender.settings import SenderSettings, SmtpSecurity


def _reply(code: int, text: bytes | str) -> str:
    return f"{code} {text.decode('utf-8', errors='replace') if isinstance(text, bytes) else text}"


Bearer = Callable[[], tuple[str, str]]
"""(user, access token) for SASL XOAUTH2/OAUTHBEARER, asked at each login; raises StepFailed
(the token layer's TokenRefused) with the identity provider's words when it has no token."""


class SmtpTransport:
    """Sends mails over one SMTP connection; a failure closes it, the next mail reconnects."""

    def __init__(
        self, settings: SenderSettings, bearer: Bearer | None = None, on_bearer_refused: Callable[[], None] | None = None
    ) -> None:
        """``bearer``: log in with a token instead of the settings' login; ``on_bearer_refused``
        runs when the server refuses the token (to drop it from the cache)."""
        self._settings = settings
        self._bearer = bearer
        self._on_bearer_refused = on_bearer_refused or (lambda: None)
        self._smtp: smtplib.SMTP | None = None

    def _tls_context(self) -> ssl.SSLContext:
        ca_file = self._settings.smtp_ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        s = self._settings
        if s.smtp_security is SmtpSecurity.TLS:
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds, context=self._tls_context())
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds)
        try:
            smtp.ehlo()
            if s.smtp_security is SmtpSecurity.STARTTLS:
                if not smtp.has_extn("starttls"):
                    # Never fall back to plain text: the password would travel in clear.
                    raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS")
                smtp.starttls(context=self._tls_context())
                smtp.ehlo()
            if self._bearer is not None:
                self._authenticate_bearer(smtp, *self._bearer())
            elif s.smtp_username is not None and s.smtp_password is not None:
                self._authenticate(smtp, s.smtp_username.get_secret_value(), s.smtp_password.get_secret_value())
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    def _authenticate(smtp: smtplib.SMTP, username: str, password: str) -> None:
        # smtplib's login() encodes credentials as ASCII; AUTH PLAIN by hand sends UTF-8,
        # so a password with umlauts works too.
        if "PLAIN" in smtp.esmtp_features.get("auth", "").upper().split():
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
            code, text = smtp.docmd("AUTH", f"PLAIN {token}")
            if code != 235:
                raise smtplib.SMTPAuthenticationError(code, text)
        else:
            smtp.login(username, password)

    def _authenticate_bearer(self, smtp: smtplib.SMTP, user: str, token: str) -> None:
        offered = smtp.esmtp_features.get("auth", "").upper().split()
        mechanism = choose_bearer_mechanism(set(offered))
        if mechanism is None:
            raise smtplib.SMTPNotSupportedError(
                f"the server offers neither XOAUTH2 nor OAUTHBEARER (AUTH {' '.join(offered) or 'not offered'})"
            )
        settings = self._settings
        initial = sasl_bearer(mechanism, user, token, settings.smtp_host, settings.smtp_port).decode()
        # A refused token gets an error challenge first; the abort answer makes the server send its refusal.
        answer = sasl_bearer_abort(mechanism).decode()
        try:
            smtp.auth(mechanism, lambda challenge=None: initial if challenge is None else answer, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError:
            self._on_bearer_refused()
            raise

    def send(self, mail: ClaimedMail, message: EmailMessage) -> Delivered | NotDelivered:
        """Send ``message`` from ``mail.sender_address`` to ``mail.recipient``."""
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            smtp = self._smtp
            options = []
            if mail.international:
                if not smtp.has_extn("smtputf8"):
                    self._reset()
                    return NotDelivered("the server does not offer SMTPUTF8, which a non-ASCII address needs", True)
                options.append("SMTPUTF8")
            code, text = smtp.mail(mail.sender_address, options)
            if code != 250:
                self._reset()
                return NotDelivered(_reply(code, text), permanent=code >= 500)
            code, text = smtp.rcpt(mail.recipient)
            if code not in (250, 251):
                self._reset()
                return NotDelivered(_reply(code, text), permanent=code >= 500)
            code, text = smtp.data(message.as_bytes(policy=message.policy))
            if code != 250:
                return NotDelivered(_reply(code, text), permanent=code >= 500)
            return Delivered(_reply(code, text))
        except smtplib.SMTPDataError as error:  # DATA itself refused
            self.close()
            return NotDelivered(_reply(error.smtp_code, error.smtp_error), permanent=error.smtp_code >= 500)
        except smtplib.SMTPResponseException as error:
            # Greeting, EHLO, STARTTLS or AUTH refused: the sender's setup, not this mail. Retry.
            self.close()
            return NotDelivered(_reply(error.smtp_code, error.smtp_error), permanent=False)
        except StepFailed as error:
            # No token for the account: the identity provider's words, as the fetcher shows them.
            self.close()
            return NotDelivered(f"no access token for SMTP: {error.message}", permanent=False)
        except (OSError, smtplib.SMTPException) as error:  # ssl.SSLError is an OSError
            self.close()
            return NotDelivered(f"no SMTP reply: {type(error).__name__}: {error}", permanent=False)

    def _reset(self) -> None:
        """Clear the refused transaction so the connection can carry the next mail."""
        try:
            if self._smtp is not None:
                self._smtp.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        if self._smtp is None:
            return
        try:
            self._smtp.quit()
        except (OSError, smtplib.SMTPException):
            self._smtp.close()
        self._smtp = None

