"""deploy/grafana: the dashboard is the generator's output and uses the provisioned
datasource; tests/observability/test_dashboard.py runs its queries for real."""

from __future__ import annotations

import json

import yaml

from tests.deploy.test_k8s import load_script
from tests.deploy.tools import DEPLOY

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "hookline-overview.json"
# What the issue asks operators to see.
REQUIRED_PANELS = {
    "Ingest rate", "Deliveries by outcome", "Success ratio", "Attempt latency",
    "End-to-end latency", "Retries by tier", "Dead letters by reason", "Queue depths",
    "Oldest due delivery", "Circuits open", "Dispatcher in-flight", "Dispatcher saturation",
    "Replay progress",
    # Fairness (issue 15): per-shard depth and age, the top tenants by backlog.
    "Delivery shard depths", "Shard backlog age", "Top tenants by backlog",
    "Top tenants' oldest due",
}  # fmt: skip


def test_the_dashboard_is_the_generators_output() -> None:
    script = load_script(GRAFANA / "build_dashboard.py")
    assert DASHBOARD.read_text() == script.render(), "run: python deploy/grafana/build_dashboard.py"


def test_every_panel_queries_the_provisioned_datasource_by_uid() -> None:
    [source] = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert dashboard["uid"] == "hookline-overview"
    assert {p["title"] for p in panels} >= REQUIRED_PANELS
    for panel in panels:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]
            assert "hookline_" in target["expr"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
