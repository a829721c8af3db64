"""Apache Kafka 4, one KRaft node acting as broker and controller."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

from .component import Component, ProbeFailed
from .config_templates import render_to
from .layout import DEPLOY_DIR
from .os_accounts import Accounts
from .preflight import MissingTool, find_java, find_maven
from .settings import HOST

POM = DEPLOY_DIR / "kafka" / "pom.xml"
_POM_STAMP = ".pom-sha256"


def new_cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A KRaft cluster id: 16 random bytes in unpadded URL-safe base64.

    An id that starts with ``-`` is drawn again, as Kafka's own ``Uuid.randomUuid`` does: the storage
    tool's argument parser reads ``-t -abc`` as a missing value followed by an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Component):
    name = "kafka"

    java: Path | None = None
    mvn: Path | None = None

    def port_settings(self) -> dict[str, int]:
        return {"kafka_port": self.settings.kafka_port, "kafka_controller_port": self.settings.kafka_controller_port}

    def address(self) -> str:
        return self.bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.settings.kafka_port}"

    def owns(self, argv: list[str]) -> bool:
        return "kafka.Kafka" in argv and str(self.layout.kafka_config) in argv

    def find_tools(self, path: str | None = None) -> list[MissingTool]:
        missing = []
        java = find_java(path)
        if isinstance(java, MissingTool):
            missing.append(java)
        else:
            self.java = java
        if not self._jars_current():
            mvn = find_maven(path)
            if isinstance(mvn, MissingTool):
                missing.append(mvn)
            else:
                self.mvn = mvn
        return missing

    # --- one-time setup ---------------------------------------------------
    def _pom_digest(self) -> str:
        return hashlib.sha256(POM.read_bytes()).hexdigest()

    def _jars_current(self) -> bool:
        try:
            return (self.layout.kafka_libs / _POM_STAMP).read_text().strip() == self._pom_digest()
        except OSError:
            return False

    def _fetch_jars(self) -> None:
        """Copy the broker jars (resolved through ~/.m2) into the state dir."""
        libs = self.layout.kafka_libs
        staging = libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        with self.log_file.open("ab") as log:
            log.write(b"\n=== mailintake stack: starting maven to fetch the Kafka jars\n")
            log.flush()
            result = subprocess.run(
                [str(self.mvn), "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                 f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                cwd=self.layout.kafka_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            raise self.failure(f"could not fetch its jars with Maven (exit code {result.returncode})")
        (staging / _POM_STAMP).write_text(self._pom_digest())
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)

    def _classpath(self) -> str:
        return f"{self.layout.kafka_libs}{os.sep}*"

    def _format_storage(self) -> None:
        """Format the KRaft metadata log once; later starts reuse the cluster."""
        if (self.layout.kafka_data / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        with self.log_file.open("ab") as log:
            log.write(b"\n=== mailintake stack: starting the Kafka storage format\n")
            log.flush()
            result = subprocess.run(
                [str(self.java), f"-Dlog4j2.configurationFile={self.layout.kafka_log4j_config}",
                 "-cp", self._classpath(), "kafka.tools.StorageTool", "format",
                 "-t", cluster_id, "-c", str(self.layout.kafka_config)],
                cwd=self.layout.kafka_dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        if result.returncode != 0:
            raise self.failure("storage could not be formatted")

    def prepare(self, accounts: Accounts) -> None:
        self.layout.kafka_dir.mkdir(parents=True, exist_ok=True)
        if not self._jars_current():
            self._fetch_jars()
        render_to(
            "kafka/server.properties.j2", self.layout.kafka_config,
            host=HOST, port=self.settings.kafka_port, controller_port=self.settings.kafka_controller_port,
            data_dir=self.layout.kafka_data,
        )
        render_to("kafka/log4j2.properties.j2", self.layout.kafka_log4j_config, log_file=self.log_file)
        self._format_storage()

    def command(self) -> list[str]:
        heap = self.settings.kafka_heap
        return [
            str(self.java), f"-Xmx{heap}", f"-Xms{heap}",
            # A broker out of heap is useless; let `up` see it die instead.
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            # The client JIT only. This broker lives for a test session or a bench run, on
            # the cores the services use: there the C2 compiler took as much CPU as the
            # requests it was compiling for, and C1's code served them no slower
            # (BENCHMARKS.md, "the local broker's JIT").
            "-XX:TieredStopAtLevel=1",
            # Plain IPv4 sockets: the listeners are 127.0.0.1 only anyway.
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile={self.layout.kafka_log4j_config}",
            "-cp", self._classpath(), "kafka.Kafka", str(self.layout.kafka_config),
        ]

    # --- health -------------------------------------------------------------
    def probe(self, timeout: float) -> None:
        """A metadata round trip with the admin client; the broker must be registered."""
        with _quiet_kafka_client():
            from kafka import KafkaAdminClient
            from kafka.errors import KafkaError

            timeout_ms = int(timeout * 1000)
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap_servers, client_id="mailintake-stack-probe",
                    request_timeout_ms=timeout_ms,
                )
            except (KafkaError, OSError) as exc:
                raise ProbeFailed(f"no broker answered at {self.bootstrap_servers}: {exc!r}") from None
            try:
                cluster = admin.describe_cluster()
            except (KafkaError, OSError) as exc:
                raise ProbeFailed(f"describe cluster failed: {exc!r}") from None
            finally:
                admin.close()
        if not cluster.get("brokers"):
            raise ProbeFailed("the cluster reports no brokers yet")


@contextlib.contextmanager
def _quiet_kafka_client():
    """Silence kafka-python while probing: refused connections are expected during startup.

    The 'kafka' logger is raised to CRITICAL for the probe and set back after it, unless
    someone asked it for INFO or DEBUG (to watch the probe). The CLI's own logging sets
    it to WARNING, and there each refused connection was an "error" line in the output
    of ``stack up``, though nothing was wrong.
    """
    logger = logging.getLogger("kafka")
    previous = logger.level
    quiet = previous == logging.NOTSET or previous >= logging.WARNING
    if quiet:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        if quiet:
            logger.setLevel(previous)
