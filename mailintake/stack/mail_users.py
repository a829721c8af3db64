"""Mailbox accounts shared by Dovecot and the SMTP relay: one passwd-file.

Passwords are stored as Dovecot ``{SSHA512}`` hashes (salted SHA-512), which
the relay can check with hashlib alone. Dovecot re-reads the file when it
changes, so adding a user needs no restart (writing it waits up to a second
for Dovecot to notice, see ``_wait_for_dovecot_resync``).
"""

from __future__ import annotations

import base64
import fcntl
import grp
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .settings import MAIL_DOMAIN

SCHEME = "{SSHA512}"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class MailUser:
    """A mailbox: log in with ``name`` (or ``address``) and ``password``."""

    name: str
    password: str

    @property
    def address(self) -> str:
        return f"{self.name}@{MAIL_DOMAIN}"


#: Mailboxes every stack has. ``demo`` is the demo help-desk mailbox;
#: ``umlaut`` has a non-ASCII password, which needs AUTHENTICATE PLAIN.
DEMO_USERS: tuple[MailUser, ...] = (
    MailUser("demo", "demo-Password-1"),
    MailUser("alice", "alice-Password-1"),
    MailUser("bob", "bob-Password-1"),
    MailUser("support", "support-Password-1"),
    MailUser("helpdesk", "helpdesk-Password-1"),
    MailUser("umlaut", "Pässwörd-Ünïcode-1"),
)


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.sha512(password.encode() + salt).digest()
    return SCHEME + base64.b64encode(digest + salt).decode()


def verify_password(password: bytes, stored: str) -> bool:
    if not stored.startswith(SCHEME):
        return False
    try:
        raw = base64.b64decode(stored[len(SCHEME) :], validate=True)
    except ValueError:
        return False
    digest, salt = raw[:64], raw[64:]
    return hmac.compare_digest(hashlib.sha512(password + salt).digest(), digest)


def local_part(login: str) -> str:
    """``demo`` for ``demo`` or ``demo@mailintake.test`` (any case of the domain)."""
    name, _, domain = login.partition("@")
    if domain and domain.lower() != MAIL_DOMAIN:
        return ""
    return name.lower()


def read_users(users_file: Path) -> dict[str, str]:
    """Name → stored hash, from the passwd-file; empty if it does not exist yet."""
    try:
        lines = users_file.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    users = {}
    for line in lines:
        if line and not line.startswith("#"):
            fields = line.split(":")
            if len(fields) >= 2:
                users[fields[0]] = fields[1]
    return users


def check_credentials(users_file: Path, login: str, password: bytes) -> bool:
    stored = read_users(users_file).get(local_part(login))
    return stored is not None and verify_password(password, stored)


def _write_users(users_file: Path, users: dict[str, str]) -> None:
    body = "".join(f"{name}:{stored}::::::\n" for name, stored in sorted(users.items()))
    tmp = users_file.with_name(users_file.name + ".tmp")
    tmp.write_text("# Written by mailintake stack; edit with add_mail_user().\n" + body, encoding="utf-8")
    if os.geteuid() == 0:
        # Dovecot's auth process runs as the dovecot user and must read it.
        os.chown(tmp, 0, grp.getgrnam("dovecot").gr_gid)
        tmp.chmod(0o640)
    else:
        tmp.chmod(0o600)
    # A rename gives the file a new inode, which Dovecot notices and re-reads.
    tmp.replace(users_file)


def set_users(users_file: Path, wanted: dict[str, str], replace_existing: bool) -> None:
    """Add ``wanted`` (name → password) to the passwd-file under a lock.

    Existing entries are kept unless ``replace_existing``; entries not named
    in ``wanted`` are always kept, so users added by tests survive `up`.
    """
    for name in wanted:
        if not _NAME.match(name):
            raise ValueError(f"invalid mailbox name {name!r}: use lowercase letters, digits, '.', '_', '-'")
    users_file.parent.mkdir(parents=True, exist_ok=True)
    with open(users_file.with_name(users_file.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        users = read_users(users_file)
        changed = False
        for name, password in wanted.items():
            if "\n" in password or "\0" in password:
                raise ValueError("a password may not contain newlines or NUL")
            stored = users.get(name)
            if stored is None or (replace_existing and not verify_password(password.encode(), stored)):
                users[name] = hash_password(password)
                changed = True
        if changed or not users_file.exists():
            _write_users(users_file, users)
            _wait_for_dovecot_resync()


def _wait_for_dovecot_resync() -> None:
    """Return once Dovecot is sure to see the new file.

    Dovecot checks a passwd-file for changes at most once per wall-clock
    second; a lookup later in the second of the write may still use the old
    contents, so wait for the next second to begin.
    """
    time.sleep(1.02 - time.time() % 1)


def ensure_demo_users(users_file: Path) -> None:
    set_users(users_file, {u.name: u.password for u in DEMO_USERS}, replace_existing=True)
