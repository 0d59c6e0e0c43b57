"""deploy/k8s renders with `kubectl kustomize`, its core resources pass
`kubernetes-validate --strict`, and it agrees with the code it deploys."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from common.settings import Settings
from common.transport import topology
from tests.deploy.tools import DEPLOY, require_tool, run

K8S = DEPLOY / "k8s"
OVERLAYS = [K8S / "base", K8S / "overlays" / "production"]
# Custom resources: their CRDs' schemas are not in kubernetes-validate, so they are checked
# by the structural tests below instead.
CUSTOM_KINDS = {
    "ServiceMonitor": "Prometheus Operator CRD",
    "PrometheusRule": "Prometheus Operator CRD",
    "ScaledObject": "KEDA CRD",
    "TriggerAuthentication": "KEDA CRD",
}
KUBERNETES_VERSION = "1.30.0"


@cache
def rendered(directory: Path) -> tuple[dict[str, Any], ...]:
    kubectl = require_tool("kubectl")
    output = run(kubectl, "kustomize", str(directory))
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: p.name)
def test_kustomize_renders_every_resource(directory: Path) -> None:
    kinds = sorted(doc["kind"] for doc in rendered(directory))
    assert kinds == sorted(["ConfigMap", "Deployment", "Deployment", "Deployment", "Job",
                            "PodDisruptionBudget", "PodDisruptionBudget",
                            "PodDisruptionBudget", "PrometheusRule", "ScaledObject",
                            "Service", "Service", "Service", "ServiceMonitor",
                            "TriggerAuthentication", "NetworkPolicy", "NetworkPolicy",
                            "NetworkPolicy", "NetworkPolicy"])  # fmt: skip


DEPRECATED_FIELDS = {"bases", "commonLabels", "patchesStrategicMerge", "patchesJson6902",
                     "vars"}  # fmt: skip


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: p.name)
def test_kustomizations_use_no_deprecated_field(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert not DEPRECATED_FIELDS & set(kustomization), DEPRECATED_FIELDS & set(kustomization)
    output = run(require_tool("kubectl"), "kustomize", str(directory))
    assert "deprecated" not in output.lower()


def selected(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))


def policies_for(component: str) -> list[dict[str, Any]]:
    docs = rendered(OVERLAYS[1])
    pod = one(docs, "Deployment", f"hookline-{component}")["spec"]["template"]["metadata"]
    return [d for d in docs if d["kind"] == "NetworkPolicy" and selected(d, pod["labels"])]


@pytest.mark.parametrize("component", ["api", "router", "dispatcher"])
def test_network_policies_open_only_the_served_ports(component: str) -> None:
    policies = policies_for(component)
    assert any(p["metadata"]["name"] == "hookline-default-deny" for p in policies)
    open_ports = {
        port["port"]
        for p in policies
        for rule in p["spec"].get("ingress", [])
        for port in rule.get("ports", [])
    }
    assert open_ports == ({8000} if component == "api" else {9100})


@pytest.mark.parametrize("component", ["api", "router", "dispatcher"])
def test_only_senders_reach_the_internet_and_never_private_or_metadata_ranges(
    component: str,
) -> None:
    blocks = [
        peer["ipBlock"]
        for p in policies_for(component)
        for rule in p["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    ]
    if component == "router":
        assert blocks == []  # DNS, database and broker only
        return
    v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(v4["except"])


@pytest.mark.parametrize("directory", OVERLAYS, ids=lambda p: p.name)
def test_kubernetes_validate_accepts_the_core_resources(directory: Path, tmp_path: Path) -> None:
    validate = require_tool("kubernetes-validate")
    core = [doc for doc in rendered(directory) if doc["kind"] not in CUSTOM_KINDS]
    skipped = {doc["kind"] for doc in rendered(directory)} - {doc["kind"] for doc in core}
    assert skipped == set(CUSTOM_KINDS)  # and only those, for the reasons given there
    manifest = tmp_path / "core.yaml"
    manifest.write_text(yaml.safe_dump_all(core))
    output = run(validate, "--strict", "-k", KUBERNETES_VERSION, str(manifest))
    assert output.count("passed for resource") == len(core), output


def test_kubernetes_validate_rejects_a_misspelt_field(tmp_path: Path) -> None:
    """The check above can fail: strict validation refuses a field Kubernetes lacks."""
    import subprocess

    validate = require_tool("kubernetes-validate")
    deployment = one(rendered(OVERLAYS[1]), "Deployment", "hookline-dispatcher")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(yaml.safe_dump(broken))
    result = subprocess.run([validate, "--strict", "-k", KUBERNETES_VERSION, str(manifest)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0 and "replica" in result.stdout + result.stderr


@pytest.mark.parametrize("component", ["api", "router", "dispatcher"])
def test_every_deployment_has_probes_resources_and_runs_as_non_root(component: str) -> None:
    deployment = one(rendered(OVERLAYS[1]), "Deployment", f"hookline-{component}")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["args"][0] == component
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = container["readinessProbe"]["httpGet"]["port"]
    assert port == ("http" if component == "api" else "metrics")
    assert {p["name"] for p in container["ports"]} == {port}
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["image"].startswith("registry.example.com/hookline:")


def test_termination_grace_covers_each_drain_with_a_bounded_margin() -> None:
    from dispatcher.worker import DRAIN_GRACE_S
    from router.worker import DRAIN_TIMEOUT_S

    docs = rendered(OVERLAYS[1])
    config = Settings(**{key.removeprefix("HOOKLINE_").lower(): value for key, value in
                         one(docs, "ConfigMap", "hookline-config")["data"].items()})  # fmt: skip
    drains = {
        "dispatcher": config.connect_timeout_s + config.request_timeout_s + DRAIN_GRACE_S,
        "router": DRAIN_TIMEOUT_S,
        "api": 30.0 + 5.0,  # uvicorn's join in `hookline api` + the preStop sleep
    }
    for component, drain_s in drains.items():
        pod = one(docs, "Deployment", f"hookline-{component}")["spec"]["template"]["spec"]
        grace_s = pod["terminationGracePeriodSeconds"]
        assert drain_s + 5 <= grace_s <= drain_s + 30, (component, drain_s, grace_s)


def test_the_config_map_names_only_real_settings() -> None:
    data = one(rendered(OVERLAYS[0]), "ConfigMap", "hookline-config")["data"]
    fields = {f"HOOKLINE_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields, set(data) - fields


def test_every_deployment_has_a_disruption_budget_selecting_its_pods() -> None:
    docs = rendered(OVERLAYS[1])
    for component in ("api", "router", "dispatcher"):
        budget = one(docs, "PodDisruptionBudget", f"hookline-{component}")
        deployment = one(docs, "Deployment", f"hookline-{component}")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_prometheus_rule_is_generated_from_the_rules_file() -> None:
    script = load_script(K8S / "build_prometheusrule.py")
    assert (K8S / "base" / "prometheusrule.yaml").read_text() == script.render(), (
        "run: python deploy/k8s/build_prometheusrule.py"
    )
    rule = one(rendered(OVERLAYS[1]), "PrometheusRule", "hookline")
    rules_file = yaml.safe_load(
        (DEPLOY / "prometheus" / "rules" / "hookline.rules.yml").read_text()
    )
    base = script.RUNBOOK_BASE_URL
    assert rule["spec"]["groups"] == script.with_runbook_base(rules_file["groups"], base)


def test_runbook_urls_are_built_from_the_base_url_the_operator_gives() -> None:
    script = load_script(K8S / "build_prometheusrule.py")
    groups = script.prometheus_rule("https://git.example.com/ops/hookline/blob/v1/")["spec"]
    urls = [r["annotations"]["runbook_url"] for g in groups["groups"] for r in g["rules"]]
    assert urls and all(
        url.startswith("https://git.example.com/ops/hookline/blob/v1/docs/runbooks/Hookline")
        for url in urls
    )
    default = script.prometheus_rule()["spec"]["groups"][0]["rules"][0]
    assert default["annotations"]["runbook_url"].startswith(script.RUNBOOK_BASE_URL + "/docs/")


def test_the_service_monitor_gives_the_job_names_the_alerts_use() -> None:
    docs = rendered(OVERLAYS[1])
    monitor = one(docs, "ServiceMonitor", "hookline")
    job_label = monitor["spec"]["jobLabel"]
    services = [doc for doc in docs if doc["kind"] == "Service"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert all(selector.items() <= s["metadata"]["labels"].items() for s in services)
    jobs = {s["metadata"]["labels"][job_label] for s in services}
    assert jobs == {"hookline-api", "hookline-router", "hookline-dispatcher"}
    scraped_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert all({p["name"] for p in s["spec"]["ports"]} & scraped_ports for s in services)


def test_keda_scales_the_dispatchers_on_the_deliveries_queue_and_never_to_zero() -> None:
    docs = rendered(OVERLAYS[1])
    scaled = one(docs, "ScaledObject", "hookline-dispatcher")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "hookline-dispatcher"
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == topology.DELIVERIES
    # The AMQP trigger counts ready messages only: a busy pipeline can look empty.
    assert scaled["spec"]["minReplicaCount"] >= 1
    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["spec"]["secretTargetRef"][0]["key"] == "HOOKLINE_BROKER_URL"


def test_the_process_count_is_pinned_where_the_core_count_would_be_the_nodes() -> None:
    """Pods have no CPU limit, so `--processes` by core count would start one process per
    node core, each wanting its own metrics port: the ConfigMap pins one per pod."""
    data = one(rendered(OVERLAYS[1]), "ConfigMap", "hookline-config")["data"]
    assert Settings(processes=data["HOOKLINE_PROCESSES"]).processes == 1
