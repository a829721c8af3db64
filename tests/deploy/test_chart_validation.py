"""helm lint, helm template and kubeconform over the chart, with the default and the production values."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.deploy.chart import CHART, VARIANTS, DeployTools, helm_template, kubeconform, rendered, rendered_text, run

# Kinds each variant must produce, so a template that silently renders nothing fails here.
EXPECTED_KINDS = {
    "default": {"Deployment", "Service", "ServiceAccount", "ConfigMap", "Secret", "NetworkPolicy", "Job"},
    "production": {
        "Deployment", "Service", "ServiceAccount", "ConfigMap", "NetworkPolicy", "Job",
        "PodDisruptionBudget", "KafkaTopic", "ScaledObject", "ServiceMonitor",
    },
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_passes(tools: DeployTools, variant: str) -> None:
    command = [tools.helm, "lint", CHART, "--strict", "--kube-version", tools.kubernetes_version]
    for values_file in VARIANTS[variant]:
        command += ["--values", values_file]
    result = run(command)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_rendered_object_passes_schema_validation(tools: DeployTools, variant: str) -> None:
    result = kubeconform(tools, rendered_text(variant))
    report = json.loads(result.stdout)
    problems = [f"{r['kind']} {r['name']}: {r['status']}: {r.get('msg', '')}" for r in report["resources"]]
    assert result.returncode == 0, "\n".join(problems) or result.stderr
    summary = report["summary"]
    # Nothing may pass by being skipped: every kind must have found its schema.
    assert summary["skipped"] == 0 and summary["errors"] == 0 and summary["invalid"] == 0, summary
    kinds = {o["kind"] for o in rendered(variant)}
    assert EXPECTED_KINDS[variant] <= kinds, f"missing kinds: {EXPECTED_KINDS[variant] - kinds}"
    assert summary["valid"] == len(rendered(variant))


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0].update(imagePullPolcy="Always")),
        ("KafkaTopic", lambda o: o["spec"].update(partitions="twelve")),
        ("ScaledObject", lambda o: o["spec"]["triggers"][0]["metadata"].update(lagThreshold=500)),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(intervall="30s")),
        ("NetworkPolicy", lambda o: o["spec"].update(egres=[])),
    ],
)
def test_schema_validation_catches_a_broken_object(tools: DeployTools, kind: str, breakage) -> None:
    # Proves the schemas are found and strict: the same object with one mistake must fail.
    broken = next(o for o in rendered("production") if o["kind"] == kind)
    breakage(broken)
    result = kubeconform(tools, yaml.safe_dump(broken))
    assert result.returncode != 0, f"kubeconform accepted a broken {kind}: {result.stdout}"
    assert json.loads(result.stdout)["summary"]["invalid"] == 1


def test_without_a_database_secret_the_chart_says_what_is_missing(tools: DeployTools) -> None:
    result = helm_template(tools, ())
    assert result.returncode != 0
    assert "secrets.database: set existingSecret" in result.stderr


def test_without_the_accounts_key_the_chart_names_it(tools: DeployTools, tmp_path) -> None:
    only_database = tmp_path / "only-database.yaml"
    only_database.write_text(yaml.safe_dump({"secrets": {"database": {"existingSecret": "mailintake-database"}}}))
    result = helm_template(tools, (only_database,))
    assert result.returncode != 0
    assert 'needs the secret "accountsEncryption" for MAILINTAKE_ACCOUNTS_ENCRYPTION_KEYS' in result.stderr


def test_kafka_topics_render_for_the_older_strimzi_api_too(tools: DeployTools) -> None:
    # Strimzi before 0.49 serves only v1beta2; the chart offers it through strimzi.apiVersion.
    result = helm_template(tools, VARIANTS["production"], "--set", "strimzi.apiVersion=kafka.strimzi.io/v1beta2")
    assert result.returncode == 0, result.stderr
    topics = [o for o in yaml.safe_load_all(result.stdout) if o and o["kind"] == "KafkaTopic"]
    assert topics and {t["apiVersion"] for t in topics} == {"kafka.strimzi.io/v1beta2"}
    validation = kubeconform(tools, yaml.safe_dump_all(topics))
    assert validation.returncode == 0, validation.stdout
