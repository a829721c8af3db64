"""IMAP edge of the fetcher (imapclient): connect, authenticate, fetch, act after ack."""

from __future__ import annotations

import ssl

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from services.fetcher.account import Account, Security


class MailServerError(Exception):
    """The mail server refused something; ``server_reply`` is its text exactly as sent."""

    def __init__(self, step: str, server_reply: str) -> None:
        super().__init__(f"{step} failed: {server_reply}")
        self.step = step
        self.server_reply = server_reply


def tls_context(account: Account) -> ssl.SSLContext:
    # Verification stays on; a private CA is trusted by naming it, never by turning checks off.
    return ssl.create_default_context(cafile=str(account.ca_file) if account.ca_file else None)


def _reply(exc: Exception) -> str:
    text = exc.args[0] if exc.args else str(exc)
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


class ImapMailbox:
    """One authenticated IMAP session on one folder of one account."""

    def __init__(self, account: Account, timeout: float) -> None:
        self.account = account
        context = tls_context(account)
        self._client = IMAPClient(
            account.host,
            port=account.port,
            ssl=account.security is Security.TLS,
            ssl_context=context,
            timeout=timeout,
        )
        try:
            if account.security is Security.STARTTLS:
                self._client.starttls(context)
            password = account.password.get_secret_value()
            try:
                if account.prevent_plaintext_login:
                    self._client.plain_login(account.username, password)
                else:
                    self._client.login(account.username, password)
            except IMAPClientError as exc:
                raise MailServerError("authentication", _reply(exc)) from None
        except BaseException:
            self.close()
            raise

    def select(self) -> int:
        """Select the account's folder read-write and return its UIDVALIDITY."""
        try:
            info = self._client.select_folder(self.account.folder)
        except IMAPClientError as exc:
            raise MailServerError(f"select folder {self.account.folder!r}", _reply(exc)) from None
        return int(info[b"UIDVALIDITY"])

    def uids_after(self, uid: int) -> list[int]:
        return list(self._client.search(["UID", f"{uid + 1}:*"]))

    def fetch(self, uids: list[int]) -> dict[int, bytes]:
        """Raw bytes by UID. BODY.PEEK keeps \\Seen unset: flagging waits for Kafka's ack."""
        response = self._client.fetch(uids, ["BODY.PEEK[]"])
        return {uid: data[b"BODY[]"] for uid, data in response.items() if b"BODY[]" in data}

    def after_fetch(self, uids: list[int]) -> None:
        """Apply the account's after-fetch action to mails Kafka has acknowledged."""
        action = self.account.after_fetch
        if action == "mark_seen":
            self._client.add_flags(uids, [b"\\Seen"], silent=True)
        elif action == "delete":
            self._client.delete_messages(uids, silent=True)
            self._expunge(uids)
        else:
            target = action.removeprefix("move:")
            if self._client.has_capability("MOVE"):
                self._client.move(uids, target)
            else:
                self._client.copy(uids, target)
                self._client.delete_messages(uids, silent=True)
                self._expunge(uids)

    def _expunge(self, uids: list[int]) -> None:
        # UID EXPUNGE removes only these mails, not ones another client marked deleted.
        if self._client.has_capability("UIDPLUS"):
            self._client.uid_expunge(uids)
        else:
            self._client.expunge()

    def close(self) -> None:
        try:
            self._client.logout()
        except Exception:  # noqa: BLE001 - the connection may already be gone; nothing is lost
            try:
                self._client.shutdown()
            except OSError:
                pass
