"""PostgreSQL: a private cluster in the state dir, reachable on loopback TCP."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from .component import Component, ProbeFailed
from .config_templates import render_to
from .os_accounts import Accounts, chown_tree
from .preflight import MissingTool, find_postgres_bin
from .processes import ProcessRecord, process_cmdline, process_start_ticks
from .settings import HOST

APP_ROLE = "mailintake"
APP_PASSWORD = "mailintake"
APP_DATABASE = "mailintake"
SUPERUSER = "postgres"


class Postgres(Component):
    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown: it ends sessions instead of waiting for them.
    stop_signal = signal.SIGINT

    bin_dir: Path | None = None

    def port_settings(self) -> dict[str, int]:
        return {"postgres_port": self.settings.postgres_port}

    def owns(self, argv: list[str]) -> bool:
        return bool(argv) and os.path.basename(argv[0]) == "postgres" and str(self.layout.postgres_data) in argv

    def owns_process(self, pid: int) -> bool:
        """The postmaster and its children, which call setsid() and rename themselves
        ("postgres: checkpointer"), but all work in the data directory."""
        argv = process_cmdline(pid)
        if not argv or not (argv[0].startswith("postgres:") or os.path.basename(argv[0]) == "postgres"):
            return False
        try:
            return os.readlink(f"/proc/{pid}/cwd") == str(self.layout.postgres_data)
        except OSError:
            return False

    def find_tools(self, path: str | None = None) -> list[MissingTool]:
        found = find_postgres_bin(self.settings.postgres_bin_dir, path)
        if isinstance(found, MissingTool):
            return [found]
        self.bin_dir = found
        return []

    def dirs_for_other_users(self, accounts: Accounts) -> list[tuple[str, object]]:
        return [(accounts.postgres.name, self.layout.postgres_dir)] if accounts.privileged else []

    def run_as(self, accounts: Accounts) -> str | None:
        return accounts.postgres_run_as

    # --- one-time setup -----------------------------------------------------
    def prepare(self, accounts: Accounts) -> None:
        data, sockets = self.layout.postgres_data, self.layout.postgres_socket_dir
        self.layout.postgres_dir.mkdir(parents=True, exist_ok=True)
        for directory in (data, sockets):
            directory.mkdir(mode=0o700, exist_ok=True)
            directory.chmod(0o700)
        owner = accounts.postgres
        if accounts.privileged:
            chown_tree(data, owner.uid, owner.gid)
            os.chown(sockets, owner.uid, owner.gid)
        if not (data / "PG_VERSION").exists():
            self._initdb(accounts)
        render_to("postgres/pg_hba.conf.j2", data / "pg_hba.conf", mode=0o600, host=HOST)
        if accounts.privileged:
            os.chown(data / "pg_hba.conf", owner.uid, owner.gid)

    def _initdb(self, accounts: Accounts) -> None:
        with self.log_file.open("ab") as log:
            log.write(b"\n=== mailintake stack: starting initdb\n")
            log.flush()
            result = subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.layout.postgres_data), "-U", SUPERUSER,
                 "--encoding=UTF8", "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256"],
                cwd=self.layout.postgres_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                user=self.run_as(accounts), group=accounts.postgres.gid if accounts.privileged else None,
                extra_groups=[] if accounts.privileged else None,
            )
        if result.returncode != 0:
            raise self.failure("initdb failed")

    def clear_stale_state(self) -> None:
        """Drop a postmaster.pid whose pid is dead or now belongs to another program.

        PostgreSQL itself only checks that the pid is alive, so after a crash
        a reused pid would block the start.
        """
        lock = self.layout.postgres_data / "postmaster.pid"
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        if process_start_ticks(pid) is None or not self.owns_process(pid):
            lock.unlink(missing_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.bin_dir / "postgres"), "-D", str(self.layout.postgres_data),
            "-c", f"listen_addresses={HOST}",
            "-c", f"port={self.settings.postgres_port}",
            "-c", f"unix_socket_directories={self.layout.postgres_socket_dir}",
            "-c", "unix_socket_permissions=0700",
            "-c", "logging_collector=off",
        ]

    # --- health -------------------------------------------------------------
    def _superuser_connect(self, timeout: float):
        import psycopg

        return psycopg.connect(
            host=str(self.layout.postgres_socket_dir), port=self.settings.postgres_port,
            user=SUPERUSER, dbname="postgres", connect_timeout=max(1, int(timeout)), autocommit=True,
        )

    def probe(self, timeout: float) -> None:
        """Log in as the application role over TCP, as the services do."""
        import psycopg

        try:
            with psycopg.connect(
                host=HOST, port=self.settings.postgres_port, user=APP_ROLE, password=APP_PASSWORD,
                dbname=APP_DATABASE, connect_timeout=max(1, int(timeout)),
            ) as conn:
                conn.execute("select 1")
        except psycopg.Error as exc:
            raise ProbeFailed(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)) from None

    def _server_up(self, timeout: float) -> None:
        import psycopg

        try:
            with self._superuser_connect(timeout) as conn:
                conn.execute("select 1")
        except psycopg.Error as exc:
            raise ProbeFailed(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)) from None

    def _create_app_database(self) -> None:
        """Create the application role and database if missing; safe to repeat."""
        from psycopg import sql

        with self._superuser_connect(10) as conn:
            if not conn.execute("select 1 from pg_roles where rolname = %s", (APP_ROLE,)).fetchone():
                conn.execute(
                    sql.SQL("create role {} with login password {}").format(
                        sql.Identifier(APP_ROLE), sql.Literal(APP_PASSWORD)
                    )
                )
            if not conn.execute("select 1 from pg_database where datname = %s", (APP_DATABASE,)).fetchone():
                conn.execute(
                    sql.SQL("create database {} owner {}").format(
                        sql.Identifier(APP_DATABASE), sql.Identifier(APP_ROLE)
                    )
                )

    def await_ready(self, record: ProcessRecord, deadline: float) -> None:
        """Wait for the server (over its socket), create the role and database, then log in as the app."""
        self.poll_until(record, deadline, self._server_up)
        self._create_app_database()
        self.poll_until(record, deadline, self.probe)
