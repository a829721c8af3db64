"""The Grafana dashboard (deploy/grafana/mailintake.json) asks only for metrics the services
really export, in the shape they export them, and covers what an operator watches."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "mailintake.json"
# Series the dashboard reads that other exporters provide.
EXTERNAL_SERIES = {"kafka_consumergroup_lag"}  # kafka exporter (Strimzi's, or standalone)
# What the dashboard must show (the brief of the scale-out issue).
REQUIRED_SERIES = {
    "mailintake_records_consumed_total",
    "mailintake_records_produced_total",
    "mailintake_fetcher_mails_total",
    "kafka_consumergroup_lag",
    "mailintake_fetcher_poll_lag_seconds",
    "mailintake_fetcher_last_success_timestamp_seconds",
    "mailintake_dead_lettered_total",
    "mailintake_fetcher_errors_total",
    # A refused OAuth2 token must never go unnoticed (issue #8).
    "mailintake_fetcher_token_refusals_total",
}
SERIES = re.compile(r"\b((?:mailintake|kafka)_[a-z0-9_]+)\b")


def exported_series() -> dict[str, str]:
    """Every series name the services' metrics expose, with its metric type."""
    import prometheus_client

    # Importing the service modules registers their metrics with the default registry.
    import mailintake.runtime.stream_processor  # noqa: F401
    import services.classifier.service  # noqa: F401
    import services.fetcher.service  # noqa: F401
    import services.sender.service  # noqa: F401
    import services.ticketer.service  # noqa: F401

    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}
    series = {}
    for metric in prometheus_client.REGISTRY.collect():
        if metric.name.startswith("mailintake_"):
            for suffix in suffixes.get(metric.type, ("",)):
                series[metric.name + suffix] = metric.type
    return series


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def queries() -> list[tuple[str, str]]:
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((panel["title"], target["expr"]))
    return found


def test_the_dashboard_is_valid_json_with_a_fixed_uid() -> None:
    data = dashboard()
    # A fixed uid keeps links stable and lets the sidecar replace the dashboard instead of adding one.
    assert data["uid"] == "mailintake"
    assert {v["name"] for v in data["templating"]["list"]} >= {"datasource", "namespace"}
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))


def test_every_series_it_queries_is_exported() -> None:
    exported = exported_series()
    for title, expr in queries():
        for name in SERIES.findall(expr):
            if name in EXTERNAL_SERIES:
                continue
            assert name in exported, f"panel {title!r} queries {name}, which no service exports"


@pytest.mark.parametrize("name", sorted(REQUIRED_SERIES))
def test_it_shows(name: str) -> None:
    assert any(name in SERIES.findall(expr) for _, expr in queries()), f"no panel shows {name}"


def test_rates_are_taken_of_counters_only() -> None:
    exported = exported_series()
    for title, expr in queries():
        for function, name in re.findall(r"\b(rate|increase)\((mailintake_[a-z0-9_]+)", expr):
            assert exported.get(name) in ("counter", "histogram"), f"panel {title!r}: {function} of a {exported.get(name)}"


def test_the_chart_ships_the_same_file() -> None:
    shipped = REPO_ROOT / "deploy" / "helm" / "mailintake" / "files" / "grafana" / "mailintake.json"
    assert shipped.read_bytes() == DASHBOARD.read_bytes()
