"""Rendering the Helm chart for the deployment tests, with the tools scripts/install-deploy-tools installs."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "mailintake"
DEFAULT_TOOLS_DIR = REPO_ROOT / "deploy" / ".tools"
INSTALL_HINT = "deployment tools missing: run scripts/install-deploy-tools (helm, kubeconform, hadolint, schemas)"
RELEASE = "mi"
NAMESPACE = "helpdesk"

# The default values leave the database URL and the fetcher's accounts to the installer;
# this file gives test values, so the defaults themselves can be rendered.
TEST_SECRETS = Path(__file__).resolve().parent / "values-test-secrets.yaml"
VARIANTS: dict[str, tuple[Path, ...]] = {
    "default": (TEST_SECRETS,),
    "production": (CHART / "values-production.yaml",),
}


@dataclass(frozen=True)
class DeployTools:
    helm: Path
    kubeconform: Path
    hadolint: Path
    kubernetes_version: str
    schema_locations: tuple[str, ...]


def tools_dir() -> Path:
    return Path(os.environ.get("MAILINTAKE_DEPLOY_TOOLS_DIR") or DEFAULT_TOOLS_DIR)


@functools.cache
def deploy_tools() -> DeployTools | None:
    """The installed tools, or None when scripts/install-deploy-tools has not run (or not completely)."""
    folder = tools_dir()
    manifest = folder / "tools.json"
    if not manifest.is_file():
        return None
    data = json.loads(manifest.read_text(encoding="utf-8"))
    tools = DeployTools(
        helm=folder / data["helm"],
        kubeconform=folder / data["kubeconform"],
        hadolint=folder / data["hadolint"],
        kubernetes_version=data["kubernetes_version"],
        schema_locations=tuple(str(folder / location) for location in data["schema_locations"]),
    )
    if not all(os.access(path, os.X_OK) for path in (tools.helm, tools.kubeconform, tools.hadolint)):
        return None
    return tools


def run(command: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)


def helm_template(tools: DeployTools, values_files: tuple[Path, ...], *extra: str) -> subprocess.CompletedProcess[str]:
    command: list[str | Path] = [
        tools.helm, "template", RELEASE, CHART,
        "--namespace", NAMESPACE,
        "--kube-version", tools.kubernetes_version,
    ]
    for values_file in values_files:
        command += ["--values", values_file]
    return run([*command, *extra])


@functools.cache
def rendered_text(variant: str) -> str:
    tools = deploy_tools()
    assert tools is not None, INSTALL_HINT
    result = helm_template(tools, VARIANTS[variant])
    assert result.returncode == 0, f"helm template ({variant}) failed:\n{result.stderr}"
    return result.stdout


def rendered(variant: str) -> list[dict[str, Any]]:
    """The chart's objects for a variant (a fresh copy each call, so tests may change them)."""
    return [doc for doc in yaml.safe_load_all(rendered_text(variant)) if doc]


def values(variant: str) -> dict[str, Any]:
    """values.yaml with the variant's files over it (maps merged, as helm does)."""
    merged = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for values_file in VARIANTS[variant]:
        merged = _merge(merged, yaml.safe_load(values_file.read_text(encoding="utf-8")) or {})
    return merged


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {key: _merge(base.get(key), override[key]) if key in base else override[key] for key in override} | {
            key: value for key, value in base.items() if key not in override
        }
    return override


def kubeconform(tools: DeployTools, manifests: str) -> subprocess.CompletedProcess[str]:
    """Validate manifests (yaml text) strictly against the offline schemas; fail on any kind without one."""
    command: list[str | Path] = [
        tools.kubeconform, "-strict", "-summary", "-output", "json",
        "-kubernetes-version", tools.kubernetes_version,
    ]
    for location in tools.schema_locations:
        command += ["-schema-location", location]
    return run([*command, "-"], input=manifests)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]
