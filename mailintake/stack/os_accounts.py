"""Which OS accounts run the servers and own their files.

As root, PostgreSQL refuses to run as root and Dovecot drops privileges, so
the stack uses the ``postgres`` account, Dovecot's own accounts and a
dedicated mail owner. As any other user, everything runs as that user.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    @classmethod
    def named(cls, name: str) -> Account:
        entry = pwd.getpwnam(name)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @classmethod
    def current(cls) -> Account:
        entry = pwd.getpwuid(os.getuid())
        return cls(entry.pw_name, entry.pw_uid, os.getgid())

    def groups(self) -> set[int]:
        return {self.gid} | {g.gr_gid for g in grp.getgrall() if self.name in g.gr_mem}


@dataclass(frozen=True)
class Accounts:
    """The accounts of one stack, decided by whether it runs as root."""

    privileged: bool
    postgres: Account
    mail: Account
    #: Dovecot's unprivileged internal account (reads the users file), when root.
    dovecot: Account | None

    @property
    def postgres_run_as(self) -> str | None:
        """User name for ``spawn(user=...)``; None means "stay who we are"."""
        return self.postgres.name if self.privileged else None


def system_account_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ensure_system_user(name: str) -> None:
    """Create a locked system account without a home, unless it exists."""
    if system_account_exists(name):
        return
    result = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, text=True,
    )
    if result.returncode != 0 and not system_account_exists(name):
        raise StackError(f"could not create the system user {name!r}: {result.stderr.strip()}")


def resolve_accounts(mail_system_user: str, create: bool) -> Accounts:
    """The accounts for this process; with ``create``, add missing system users (root only)."""
    if os.geteuid() != 0:
        me = Account.current()
        return Accounts(privileged=False, postgres=me, mail=me, dovecot=None)
    for name, package in (("postgres", "postgresql"), ("dovecot", "dovecot-core")):
        if not system_account_exists(name):
            if not create:
                raise StackError(f"the {name!r} OS user is missing: install {package}")
            # The package normally creates it; a trimmed image may lack it.
            ensure_system_user(name)
    if create:
        ensure_system_user(mail_system_user)
    mail = Account.named(mail_system_user) if system_account_exists(mail_system_user) else Account(
        mail_system_user, -1, -1
    )
    return Accounts(True, Account.named("postgres"), mail, Account.named("dovecot"))


def unreachable_dir(account: Account, path: Path) -> Path | None:
    """The first ancestor of ``path`` that ``account`` may not enter, or None.

    Root-owned checkouts under a private home (mode 0700) are the usual
    cause: the servers run as other users and must reach the state dir.
    """
    groups = account.groups()
    current = Path("/")
    for part in path.resolve().parts[1:]:
        current = current / part
        try:
            info = current.stat()
        except FileNotFoundError:
            return None  # created later by us, with modes we choose
        if not stat.S_ISDIR(info.st_mode):
            return None
        if info.st_uid == account.uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return current
    return None


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give ``path`` and everything below it to uid:gid (no-op for the same owner)."""
    for root, dirs, files in os.walk(path):
        for name in (root, *(os.path.join(root, entry) for entry in dirs + files)):
            info = os.lstat(name)
            if (info.st_uid, info.st_gid) != (uid, gid):
                os.lchown(name, uid, gid)
