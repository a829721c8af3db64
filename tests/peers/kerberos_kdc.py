"""A real MIT Kerberos KDC (Debian's krb5-kdc) on loopback, for the tests: its own realm,
its own configuration in a temporary folder, a service principal ``HTTP/localhost``
with a keytab, and user principals with passwords.

Nothing here touches the machine's /etc/krb5.conf or its KDC: every file lives in
``directory``, and clients find them through ``environment()`` (KRB5_CONFIG,
KRB5_KDC_PROFILE, KRB5CCNAME, KRB5RCACHEDIR).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

REALM = "MAILINTAKE.TEST"
SERVICE_PRINCIPAL = "HTTP/localhost"
#: Debian puts the KDC tools in sbin, which a non-root PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")


class KdcUnavailable(Exception):
    """The MIT KDC tools are not installed; the message says which package provides them."""


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the KDC listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise OSError("no free port for the KDC")


class LocalKdc:
    def __init__(self, directory: Path, realm: str = REALM) -> None:
        self.directory = directory
        self.realm = realm
        self.port = _free_port()
        self.krb5_conf = directory / "krb5.conf"
        self.kdc_conf = directory / "kdc.conf"
        self.service_keytab = directory / "http.keytab"
        self.client_cache = directory / "client.ccache"
        self.log_file = directory / "kdc.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._tools = {tool: shutil.which(tool, path=SEARCH_PATH) for tool in TOOLS}
        missing = [tool for tool, path in self._tools.items() if path is None]
        if missing:
            raise KdcUnavailable(
                f"{', '.join(missing)} not found: install krb5-kdc, krb5-admin-server and krb5-user"
                " (scripts/install-system-packages does)"
            )

    def environment(self) -> dict[str, str]:
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5CCNAME": f"FILE:{self.client_cache}",
            "KRB5RCACHEDIR": str(self.directory),
        }

    def _run(self, tool: str, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [self._tools[tool], *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **self.environment()},
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def _write_configuration(self) -> None:
        # TCP only and no DNS: the realm exists on this loopback port alone, and
        # "localhost" must stay "localhost" in the service principal.
        self.krb5_conf.write_text(
            f"""[libdefaults]
  default_realm = {self.realm}
  dns_lookup_kdc = false
  dns_lookup_realm = false
  dns_canonicalize_hostname = false
  rdns = false
  udp_preference_limit = 1
  ticket_lifetime = 1h

[realms]
  {self.realm} = {{
    kdc = 127.0.0.1:{self.port}
  }}

[domain_realm]
  localhost = {self.realm}
"""
        )
        self.kdc_conf.write_text(
            f"""[kdcdefaults]
  kdc_listen = 127.0.0.1:{self.port}
  kdc_tcp_listen = 127.0.0.1:{self.port}

[realms]
  {self.realm} = {{
    database_name = {self.directory / "principal"}
    key_stash_file = {self.directory / "stash"}
    acl_file = {self.directory / "kadm5.acl"}
    kdc_listen = 127.0.0.1:{self.port}
    kdc_tcp_listen = 127.0.0.1:{self.port}
  }}

[logging]
  kdc = FILE:{self.log_file}
"""
        )

    def start(self) -> LocalKdc:
        self._write_configuration()
        self._run("kdb5_util", "create", "-s", "-r", self.realm, "-P", os.urandom(12).hex())
        self.add_service(SERVICE_PRINCIPAL, self.service_keytab)
        self._process = subprocess.Popen(
            [self._tools["krb5kdc"], "-n", "-r", self.realm],
            env={**os.environ, **self.environment()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"krb5kdc exited: {self._process.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"krb5kdc did not listen on 127.0.0.1:{self.port} within 10 s")

    def add_user(self, name: str, password: str) -> str:
        self._run("kadmin.local", "-r", self.realm, "-q", f"addprinc -pw {password} {name}")
        return f"{name}@{self.realm}"

    def add_user_with_keytab(self, name: str, keytab: Path) -> str:
        """A user whose random keys live only in ``keytab`` (a service account's client keytab)."""
        self.add_service(name, keytab)
        return f"{name}@{self.realm}"

    def add_service(self, principal: str, keytab: Path) -> None:
        self._run("kadmin.local", "-r", self.realm, "-q", f"addprinc -randkey {principal}")
        self._run("kadmin.local", "-r", self.realm, "-q", f"ktadd -k {keytab} {principal}")

    def kinit(self, name: str, password: str) -> None:
        """Get a ticket-granting ticket for ``name`` into the client cache (KRB5CCNAME)."""
        self._run("kinit", name, stdin=password + "\n")

    def kdestroy(self) -> None:
        self.client_cache.unlink(missing_ok=True)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
