"""deploy/container/Containerfile cannot be built here (no container engine), so its key
properties are checked from the text, hadolint lints it, and its HEALTHCHECK script runs
against a real service endpoint."""

from __future__ import annotations

import fnmatch
import json
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mailintake.runtime.http_endpoint import Health, serve_http_endpoint
from tests.deploy.chart import CHART, DeployTools, run

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE = REPO_ROOT / "deploy" / "container" / "Containerfile"
IGNORE_FILE = REPO_ROOT / "deploy" / "container" / "Containerfile.dockerignore"
HEALTHCHECK = REPO_ROOT / "deploy" / "container" / "healthcheck.py"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in RECIPE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for name, arguments in stage:
        if name == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def copies(stage: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    found = []
    for name, arguments in stage:
        if name == "COPY" and not arguments.startswith("--from"):
            *sources, target = arguments.split()
            found.append((sources, target))
    return found


def test_builds_a_wheel_in_one_stage_and_runs_from_a_slim_python_311() -> None:
    args = dict(a.split("=", 1) for n, a in instructions() if n == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"].split(":")[-1].startswith("3.11-slim")
    build, runtime = stages()
    assert build[0][1].startswith("${PYTHON_IMAGE}") and runtime[0][1].startswith("${PYTHON_IMAGE}")
    build_steps = " ".join(a for n, a in build if n == "RUN")
    assert "pip wheel" in build_steps and "python -m venv /opt/mailintake" in build_steps
    assert ("COPY", "--from=build /opt/mailintake /opt/mailintake") in runtime
    assert "pyproject.toml" in [s for sources, _ in copies(build) for s in sources]


def test_runs_as_a_numeric_non_root_user_that_matches_the_chart() -> None:
    import yaml

    (_, runtime) = stages()
    user = [a for n, a in runtime if n == "USER"][-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit()
    pod = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["serviceDefaults"]["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(uid), int(gid))


def test_entrypoint_is_the_mailintake_command() -> None:
    (_, runtime) = stages()
    (entrypoint,) = [json.loads(a) for n, a in runtime if n == "ENTRYPOINT"]
    assert entrypoint == ["mailintake"]
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert "mailintake" in scripts


def test_schemas_are_copied_where_the_contracts_look() -> None:
    from mailintake.contracts.topics import SCHEMAS_DIR_ENV

    (_, runtime) = stages()
    targets = {tuple(sources): target for sources, target in copies(runtime)}
    assert env_of(runtime)[SCHEMAS_DIR_ENV] == targets[("schemas",)]


def test_healthcheck_runs_a_script_the_image_contains() -> None:
    (_, runtime) = stages()
    (healthcheck,) = [a for n, a in runtime if n == "HEALTHCHECK"]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    targets = {tuple(sources): target for sources, target in copies(runtime)}
    assert command[-1] == targets[("deploy/container/healthcheck.py",)]


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    patterns = [line.strip() for line in IGNORE_FILE.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    for stage in stages():
        for sources, _ in copies(stage):
            for source in sources:
                assert (REPO_ROOT / source).exists(), source
                # Last matching pattern wins, as in .dockerignore.
                included = False
                for pattern in patterns:
                    negated = pattern.startswith("!")
                    bare = pattern.lstrip("!").rstrip("/")
                    if fnmatch.fnmatch(source, bare) or source.startswith(bare + "/"):
                        included = negated
                assert included, f"{source} is left out of the build context by {IGNORE_FILE.name}"


def test_every_service_listens_on_all_addresses_at_one_port() -> None:
    (_, runtime) = stages()
    env = env_of(runtime)
    hosts = {k: v for k, v in env.items() if k.endswith("_HOST") and k.startswith("MAILINTAKE_")}
    ports = {k: v for k, v in env.items() if k.endswith("_PORT") and k.startswith("MAILINTAKE_")}
    assert set(hosts.values()) == {"0.0.0.0"} and set(ports.values()) == {"8080"}
    assert len(hosts) == len(ports) == 5
    assert env["APP_DATADIR"].startswith("/tmp/"), "faust's data folder must be on the writable /tmp"


def test_hadolint_finds_nothing(tools: DeployTools) -> None:
    result = run([tools.hadolint, RECIPE])
    assert result.returncode == 0, result.stdout + result.stderr


def healthcheck(url: str) -> int:
    return subprocess.run(
        [sys.executable, HEALTHCHECK], env={"MAILINTAKE_HEALTHCHECK_URL": url}, capture_output=True, timeout=30
    ).returncode


def test_the_healthcheck_follows_livez() -> None:
    health = Health(stall_after_seconds=3600)
    server = serve_http_endpoint("127.0.0.1", 0, health)
    try:
        url = f"http://127.0.0.1:{server.server_port}/livez"
        assert healthcheck(url) == 0
        health.stall_after_seconds = -1  # the loop counts as stalled now
        assert healthcheck(url) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert healthcheck(url) == 1, "nothing listens any more"


@pytest.mark.parametrize("instruction", ["ADD", "VOLUME"])
def test_no_instruction_that_writes_outside_tmp_or_fetches(instruction: str) -> None:
    # ADD can fetch URLs; a VOLUME would be a writable place the chart does not plan for.
    assert instruction not in {n for n, _ in instructions()}
