"""What the rendered chart must mean, beyond being schema-valid: hardened pods, probes on the
endpoint the service really serves, no mounted tokens, ingress only to the admin API, topics
equal to the contracts, autoscaling on the right lag, settings the services really read."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailintake.cli import ServiceName
from mailintake.contracts.topics import load_topics
from tests.deploy.chart import (
    REPO_ROOT,
    VARIANTS,
    DeployTools,
    component,
    of_kind,
    pod_spec,
    rendered,
    values,
)

SERVICES = sorted(name.value for name in ServiceName if name is not ServiceName.all)

# Variables the chart sets that no settings class reads yet, each with why it is set anyway.
# The test below fails when one of them turns up in a settings class, so the entry can go.
NOT_YET_READ: dict[str, str] = {}

# Variables read outside the settings classes.
READ_ELSEWHERE = {
    "MAILINTAKE_KAFKA_BOOTSTRAP_SERVERS",  # `mailintake topics apply` (mailintake/contracts/cli.py)
}


def settings_classes() -> dict[str, Any]:
    """Settings class by environment prefix, for every class the services read."""
    from services.admin.settings import AdminSettings
    from services.classifier.settings import ClassifierSettings
    from services.fetcher.settings import AccountEncryptionSettings, FetcherSettings
    from services.sender.settings import SenderSettings
    from services.ticketer.settings import TicketerSettings

    classes = (FetcherSettings, AccountEncryptionSettings, ClassifierSettings, TicketerSettings, SenderSettings, AdminSettings)
    return {cls.model_config["env_prefix"]: cls for cls in classes}


def workloads(objects: list[dict]) -> list[dict]:
    return of_kind(objects, "Deployment") + of_kind(objects, "Job")


def config_map_of(objects: list[dict], deployment: dict) -> dict[str, str]:
    names = [s["configMapRef"]["name"] for c in pod_spec(deployment)["containers"] for s in c.get("envFrom", [])]
    (name,) = names
    return next(c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"] == name)["data"]


def container_env(objects: list[dict], workload: dict) -> dict[str, Any]:
    """Every variable a workload's container gets: its ConfigMap's and its own env entries."""
    (container,) = pod_spec(workload)["containers"]
    env: dict[str, Any] = {}
    if container.get("envFrom"):
        env.update(config_map_of(objects, workload))
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(params=list(VARIANTS), scope="module")
def variant(request: pytest.FixtureRequest, tools: DeployTools) -> str:
    return request.param


@pytest.fixture
def objects(variant: str) -> list[dict]:
    return rendered(variant)


def test_every_service_runs_as_a_deployment_of_the_one_image(objects: list[dict]) -> None:
    deployments = {component(d): d for d in of_kind(objects, "Deployment")}
    assert sorted(deployments) == SERVICES
    images = {c["image"] for d in workloads(objects) for c in pod_spec(d)["containers"]}
    assert len(images) == 1, images
    for name, deployment in deployments.items():
        (container,) = pod_spec(deployment)["containers"]
        assert container["args"] == ["run", name]
        assert "command" not in container, "the image's entrypoint is `mailintake`"


def test_every_container_is_non_root_with_a_read_only_root_filesystem(objects: list[dict]) -> None:
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert isinstance(pod["runAsUser"], int) and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        tmp_volumes = [v["name"] for v in spec["volumes"] if "emptyDir" in v]
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"] and not context["capabilities"].get("add"), name
            assert context.get("runAsNonRoot", pod["runAsNonRoot"]) is True, name
            assert context.get("privileged") is not True, name
            mounts = container.get("volumeMounts", [])
            # /tmp is the one writable place, and it is an emptyDir; everything else mounted is read-only.
            assert [m["name"] for m in mounts if m["mountPath"] == "/tmp"] == tmp_volumes, name
            for mount in mounts:
                if mount["mountPath"] != "/tmp":
                    assert mount.get("readOnly") is True, f"{name}: {mount['mountPath']} is writable"


def test_probes_hit_livez_and_readyz_on_the_port_the_service_listens_on(variant: str, objects: list[dict]) -> None:
    classes = settings_classes()
    for deployment in of_kind(objects, "Deployment"):
        name = component(deployment)
        (container,) = pod_spec(deployment)["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        env = config_map_of(objects, deployment)
        listen = values(variant)["services"][name]["envNames"]
        # The chart tells the service where to listen, and the probes go exactly there.
        assert env[listen["httpHost"]] == "0.0.0.0", name
        listen_port = int(env[listen["httpPort"]])
        for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            action = container[probe]["httpGet"]
            assert action["path"] == path, f"{name} {probe}"
            port = ports.get(action["port"], action["port"])
            assert port == listen_port, f"{name} {probe} probes {port}, the service listens on {listen_port}"
        # And those variables are the ones the service's settings class reads.
        prefix = next(p for p in classes if listen["httpPort"].startswith(p))
        assert listen["httpPort"][len(prefix):].lower() in classes[prefix].model_fields, name


def test_resources_and_graceful_termination_are_set(objects: list[dict]) -> None:
    for workload in workloads(objects):
        name = workload["metadata"]["name"]
        for container in pod_spec(workload)["containers"]:
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"].get(bound, {})), f"{name}: {bound}"
    for deployment in of_kind(objects, "Deployment"):
        # Enough to finish a batch, commit and leave the consumer group after SIGTERM.
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= 30


def test_no_service_account_token_is_mounted(objects: list[dict]) -> None:
    accounts = {a["metadata"]["name"]: a for a in of_kind(objects, "ServiceAccount")}
    for account in accounts.values():
        assert account["automountServiceAccountToken"] is False, account["metadata"]["name"]
    for workload in workloads(objects):
        spec = pod_spec(workload)
        assert spec["serviceAccountName"] in accounts, workload["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, workload["metadata"]["name"]


def test_only_the_admin_api_takes_ingress(variant: str, objects: list[dict]) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    scrape_from = values(variant)["networkPolicy"]["metricsScrapeFrom"]
    for workload in workloads(objects):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], labels)]
        assert len(matching) == 1, f"{workload['metadata']['name']}: {len(matching)} policies"
        (policy,) = matching
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        ingress = policy["spec"]["ingress"]
        if component(workload) == "admin" and workload["kind"] == "Deployment":
            assert ingress, "the admin API must be reachable"
            for rule in ingress:
                assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        else:
            # At most Prometheus, on the metrics port; nothing else reaches these pods.
            for rule in ingress:
                assert rule["ports"] == [{"port": "http", "protocol": "TCP"}], policy["metadata"]["name"]
                assert scrape_from and rule["from"] == scrape_from, policy["metadata"]["name"]
            if workload["kind"] == "Job":
                assert ingress == []
        egress_ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
        assert 53 in egress_ports, f"{policy['metadata']['name']}: no DNS"


def test_egress_follows_what_each_service_talks_to(objects: list[dict]) -> None:
    policies = {component(p): p for p in of_kind(objects, "NetworkPolicy")}

    def ports(name: str) -> set[int]:
        return {port["port"] for rule in policies[name]["spec"]["egress"] for port in rule["ports"]}

    assert {9092, 5432, 993} <= ports("fetcher")
    assert 9092 in ports("classifier") and 9092 in ports("ticketer")
    assert 9092 not in ports("sender") and 587 in ports("sender")
    for name in ("fetcher", "admin", "sender"):
        assert 443 in ports(name), f"{name} cannot reach the identity providers' token endpoints"
    assert {9092, 5432} <= ports("admin"), "the admin announces account changes on Kafka"
    assert {993, 995, 443} <= ports("admin"), "the admin's connection check reaches the mail servers"
    assert not ({587, 25} & ports("admin"))
    for name in ("classifier", "ticketer"):
        assert not ({993, 995, 587, 25, 443} & ports(name)), f"{name} reaches mail servers or identity providers"


def test_settings_in_the_pods_are_ones_the_services_read(objects: list[dict]) -> None:
    classes = settings_classes()
    seen_not_yet_read: set[str] = set()
    for workload in workloads(objects):
        for variable in container_env(objects, workload):
            if variable in READ_ELSEWHERE:
                continue
            if variable in NOT_YET_READ:
                seen_not_yet_read.add(variable)
                continue
            prefix = max((p for p in classes if variable.startswith(p)), key=len, default=None)
            assert prefix, f"{workload['metadata']['name']}: {variable} belongs to no settings class"
            field = variable[len(prefix):].lower()
            assert field in classes[prefix].model_fields, (
                f"{workload['metadata']['name']}: {variable} is not a setting of {classes[prefix].__name__}"
            )
    for variable in NOT_YET_READ:
        prefix = max((p for p in classes if variable.startswith(p)), key=len)
        assert variable[len(prefix):].lower() not in classes[prefix].model_fields, (
            f"{variable} is read now: drop it from NOT_YET_READ"
        )


def test_classifier_ticketer_and_sender_share_one_instance_id(objects: list[dict]) -> None:
    ids = {}
    for deployment in of_kind(objects, "Deployment"):
        env = config_map_of(objects, deployment)
        ids.update({k: v for k, v in env.items() if k.endswith("_INSTANCE_ID")})
    assert {k.split("_")[1] for k in ids} == {"CLASSIFIER", "TICKETER", "SENDER"}
    assert len(set(ids.values())) == 1, ids


def test_fetcher_replicas_share_mailboxes_through_their_consumer_group(objects: list[dict]) -> None:
    # Mailbox ownership comes from the consumer group; the chart must not switch it off,
    # or two pods would poll every mailbox.
    (fetcher,) = [d for d in of_kind(objects, "Deployment") if component(d) == "fetcher"]
    assert fetcher["spec"]["replicas"] >= 2
    (container,) = fetcher["spec"]["template"]["spec"]["containers"]
    names = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert names.get("MAILINTAKE_FETCHER_MAILBOX_OWNERSHIP", "consumer_group") == "consumer_group"
    assert [p for p in of_kind(objects, "PodDisruptionBudget") if component(p) == "fetcher"]


def test_kafka_topics_match_the_contracts(tools: DeployTools) -> None:
    contracts = load_topics(REPO_ROOT / "schemas")
    topics = {t["spec"]["topicName"]: t for t in of_kind(rendered("production"), "KafkaTopic")}
    assert sorted(topics) == sorted(contracts)
    strimzi = values("production")["strimzi"]
    for name, contract in contracts.items():
        spec = topics[name]["spec"]
        assert spec["partitions"] == contract.partitions, name
        assert spec["config"] == contract.kafka_config(), name
        assert spec["replicas"] == strimzi["replicas"] >= 3, name
        assert topics[name]["metadata"]["labels"]["strimzi.io/cluster"] == strimzi["clusterName"]
        assert topics[name]["metadata"]["namespace"] == strimzi["topicNamespace"]
    assert not of_kind(rendered("default"), "KafkaTopic"), "Strimzi is off by default"


def test_autoscaling_watches_the_lag_each_consumer_works_off(tools: DeployTools) -> None:
    objects = rendered("production")
    contracts = load_topics(REPO_ROOT / "schemas")
    deployments = {component(d): d for d in of_kind(objects, "Deployment")}
    scaled = {component(s): s for s in of_kind(objects, "ScaledObject")}
    assert sorted(scaled) == ["classifier", "ticketer"]
    for name, scaled_object in scaled.items():
        spec = scaled_object["spec"]
        deployment = deployments[name]
        assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        # KEDA's HPA owns the count; a replicas field would reset it on every upgrade.
        assert "replicas" not in deployment["spec"], name
        consumed = [t for t in contracts.values() if name in t.consumers]
        assert [trigger["metadata"]["topic"] for trigger in spec["triggers"]] == [t.name for t in consumed]
        group = config_map_of(objects, deployment)[f"MAILINTAKE_{name.upper()}_GROUP_ID"]
        for trigger in spec["triggers"]:
            assert trigger["type"] == "kafka"
            assert trigger["metadata"]["consumerGroup"] == group
            assert trigger["metadata"]["bootstrapServers"] == values("production")["kafka"]["bootstrapServers"]
        assert 2 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= max(t.partitions for t in consumed)


def test_the_consumer_groups_are_the_services_defaults(tools: DeployTools) -> None:
    # Renaming a group moves the service to fresh offsets; the chart keeps the services' own names.
    from services.classifier.settings import ClassifierSettings
    from services.ticketer.settings import TicketerSettings

    services = values("default")["services"]
    assert services["classifier"]["consumerGroup"] == ClassifierSettings.model_fields["group_id"].default
    assert services["ticketer"]["consumerGroup"] == TicketerSettings.model_fields["group_id"].default


def test_production_runs_spare_replicas_with_disruption_budgets(tools: DeployTools) -> None:
    objects = rendered("production")
    scaled = {component(s): s["spec"]["minReplicaCount"] for s in of_kind(objects, "ScaledObject")}
    budgets = of_kind(objects, "PodDisruptionBudget")
    for deployment in of_kind(objects, "Deployment"):
        name = component(deployment)
        replicas = scaled.get(name, deployment["spec"].get("replicas"))
        if name != "fetcher":
            assert replicas >= 2, f"{name}: {replicas} replica(s)"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(matching) == 1, name
        # The budget must leave room to drain a node (never minAvailable = all replicas).
        assert matching[0]["spec"].get("maxUnavailable", 0) >= 1 or matching[0]["spec"]["minAvailable"] < replicas


def test_service_monitors_scrape_the_metrics_endpoints(tools: DeployTools) -> None:
    objects = rendered("production")
    monitors = {component(m): m for m in of_kind(objects, "ServiceMonitor")}
    assert sorted(monitors) == ["classifier", "fetcher", "sender", "ticketer"]
    services = of_kind(objects, "Service")
    for name, monitor in monitors.items():
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        targets = [s for s in services if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        assert len(targets) == 1, name
        assert endpoint["port"] in {p["name"] for p in targets[0]["spec"]["ports"]}
        assert monitor["metadata"]["labels"]["release"] == values("production")["serviceMonitor"]["labels"]["release"]


def test_production_uses_existing_secrets_only(tools: DeployTools) -> None:
    objects = rendered("production")
    plain = [s for s in of_kind(objects, "Secret")]
    assert plain == [], "production values must not carry secret values"
    existing = {v["existingSecret"] for v in values("production")["secrets"].values()}
    for workload in workloads(objects):
        for value in container_env(objects, workload).values():
            if isinstance(value, dict) and "secretKeyRef" in value:
                assert value["secretKeyRef"]["name"] in existing
        for volume in pod_spec(workload)["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["secretName"] in existing


def test_the_grafana_dashboard_ships_in_a_config_map(tools: DeployTools) -> None:
    (config_map,) = [c for c in of_kind(rendered("production"), "ConfigMap") if component(c) == "dashboard"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(config_map["data"]["mailintake.json"])
    assert shipped == json.loads((REPO_ROOT / "deploy" / "grafana" / "mailintake.json").read_text(encoding="utf-8"))
