"""Checks made before anything starts: required programs and free ports.

Both checks report every problem at once, so one run tells a person all
that is missing instead of one item per attempt.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError
from .processes import port_owner
from .settings import HOST

INSTALL_HINT = "(scripts/install-system-packages installs all of them)"

# Debian keeps daemons in sbin and PostgreSQL's server programs in a
# versioned directory; neither is on a normal user's PATH.
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin")
_DEBIAN_POSTGRES_GLOB = "/usr/lib/postgresql/*/bin"


@dataclass(frozen=True)
class MissingTool:
    """A program a component needs and did not find, with what to install."""

    component: str
    message: str


def _search_path(path: str | None) -> str:
    return path if path is not None else os.environ.get("PATH", os.defpath)


def find_java(path: str | None = None) -> Path | MissingTool:
    """The ``java`` of JAVA_HOME or PATH, if it is Java 17 or newer."""
    missing = MissingTool("kafka", "Java 17 not found on PATH: install openjdk-17-jre-headless")
    candidates = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        candidates.append(str(Path(java_home) / "bin" / "java"))
    found = shutil.which("java", path=_search_path(path))
    if found:
        candidates.append(found)
    for java in candidates:
        major = java_major_version(java)
        if major is not None and major >= 17:
            return Path(java)
        if major is not None:
            missing = MissingTool(
                "kafka", f"{java} is Java {major}; Kafka 4 needs Java 17 or newer: install openjdk-17-jre-headless"
            )
    return missing


def java_major_version(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.x".
    return int(match.group(2) or 0) if major == 1 else major


def find_maven(path: str | None = None) -> Path | MissingTool:
    found = shutil.which("mvn", path=_search_path(path))
    if found:
        return Path(found)
    return MissingTool("kafka", "Maven (mvn) not found on PATH; it fetches the Kafka jars: install maven")


def find_postgres_bin(configured: Path | None, path: str | None = None) -> Path | MissingTool:
    """Directory holding ``initdb``, ``postgres`` and ``pg_ctl``."""
    needed = ("initdb", "postgres")
    if configured is not None:
        if all((configured / name).is_file() for name in needed):
            return configured
        return MissingTool("postgres", f"initdb/postgres not found in postgres_bin_dir={configured}")
    initdb = shutil.which("initdb", path=_search_path(path))
    # Resolve symlinks (some images link the programs into /usr/local/bin).
    if initdb and (Path(initdb).resolve().parent / "postgres").is_file():
        return Path(initdb).resolve().parent
    versions = []
    for bin_dir in Path("/").glob(_DEBIAN_POSTGRES_GLOB.lstrip("/")):
        if all((bin_dir / name).is_file() for name in needed):
            try:
                versions.append((int(bin_dir.parent.name), bin_dir))
            except ValueError:
                continue
    if versions:
        return max(versions)[1]
    return MissingTool(
        "postgres",
        f"PostgreSQL server programs (initdb, postgres) not found on PATH or in {_DEBIAN_POSTGRES_GLOB}: "
        "install postgresql",
    )


def find_dovecot(path: str | None = None) -> tuple[Path, Path] | MissingTool:
    """The ``dovecot`` master binary and its ``dovecot-lda``."""
    search = os.pathsep.join([_search_path(path), *_SBIN_DIRS])
    dovecot = shutil.which("dovecot", path=search)
    if not dovecot:
        return MissingTool("dovecot", "Dovecot not found on PATH or in /usr/sbin: install dovecot-imapd dovecot-pop3d")
    prefix = Path(dovecot).resolve().parent.parent
    for lda in (prefix / "lib/dovecot/dovecot-lda", prefix / "libexec/dovecot/dovecot-lda"):
        if lda.is_file():
            return Path(dovecot), lda
    return MissingTool("smtp", f"dovecot-lda not found beside {dovecot}: install dovecot-core")


def raise_for_missing(missing: Iterable[MissingTool]) -> None:
    missing = list(missing)
    if not missing:
        return
    lines = [f"  {item.component}: {item.message}" for item in missing]
    raise StackError(
        "cannot start the stack, programs are missing:\n" + "\n".join(lines) + f"\n{INSTALL_HINT}",
        component=missing[0].component,
    )


def port_problem(component: str, setting: str, port: int) -> str | None:
    """Why ``port`` cannot be bound on 127.0.0.1 for ``component``, or None if it can."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # The servers set SO_REUSEADDR themselves, so a socket of ours lingering
    # in TIME_WAIT after `down` must not count as taken.
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((HOST, port))
        return None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            return f"port {port} ({component}) cannot be bound on {HOST}: {exc.strerror}"
    finally:
        probe.close()
    owner = port_owner(port)
    who = f" by pid {owner[0]} ({' '.join(owner[1])[:120]})" if owner else " by another process"
    env = f"MAILINTAKE_STACK_{setting.upper()}"
    return f"port {port} ({component}) on {HOST} is already in use{who}: stop that process or set {env}"


def raise_for_taken_ports(problems: Iterable[tuple[str, str]]) -> None:
    """Raise one error naming every (component, message) port problem."""
    problems = list(problems)
    if problems:
        raise StackError(
            "cannot start the stack, nothing was started:\n" + "\n".join(f"  {msg}" for _, msg in problems),
            component=problems[0][0],
        )
