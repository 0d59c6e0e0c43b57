"""Writes dashboards/hookline-overview.json from the panel list below.

    python deploy/grafana/build_dashboard.py

The JSON is committed (Grafana provisions it as is); tests/deploy/test_grafana.py checks
it equals this script's output, and tests/observability/test_dashboard.py runs every
panel's query against a real Prometheus scraping a loaded stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "hookline-prometheus"}
OUTPUT = Path(__file__).resolve().parent / "dashboards" / "hookline-overview.json"
RATE = "$__rate_interval"


def q(expr: str, legend: str = "") -> tuple[str, str]:
    return expr, legend


def quantiles(metric: str) -> list[tuple[str, str]]:
    return [
        q(f"histogram_quantile({p}, sum by (le) (rate({metric}_bucket[{RATE}])))", f"p{name}")
        for p, name in ((0.5, "50"), (0.95, "95"), (0.99, "99"))
    ]


# (row title, [(panel title, unit, description, [(expr, legend)])])
ROWS: list[tuple[str, list[tuple[str, str, str, list[tuple[str, str]]]]]] = [
    ("Traffic", [
        ("Ingest rate", "reqps", "Events offered to the API and the producer SDK, by result.",
         [q(f"sum by (result) (rate(hookline_events_ingested_total[{RATE}]))", "{{result}}")]),
        ("Routed and enqueued", "reqps", "Events routed; delivery messages published, by origin.",
         [q(f"sum(rate(hookline_events_routed_total[{RATE}]))", "events routed"),
          q(f"sum by (origin) (rate(hookline_deliveries_enqueued_total[{RATE}]))",
            "enqueued {{origin}}")]),
        ("Deliveries by outcome", "reqps", "Attempts by outcome; finished deliveries by result.",
         [q(f"sum by (outcome) (rate(hookline_delivery_attempts_total[{RATE}]))", "{{outcome}}"),
          q(f"sum by (result) (rate(hookline_deliveries_finished_total[{RATE}]))",
            "finished {{result}}")]),
        ("Success ratio", "percentunit", "Successful attempts over attempts that reached an "
         "endpoint (deferrals by an open circuit excluded).",
         [q(f'sum(rate(hookline_delivery_attempts_total{{outcome="success"}}[{RATE}])) / '
            f'sum(rate(hookline_delivery_attempts_total{{outcome=~"success|retry|dead"}}[{RATE}]))',
            "success ratio")]),
    ]),
    ("Latency", [
        ("Attempt latency", "s", "Duration of one HTTP attempt.",
         quantiles("hookline_delivery_attempt_duration_seconds")),
        ("End-to-end latency", "s", "Event accepted to delivered, retries included.",
         quantiles("hookline_delivery_e2e_seconds")),
        ("Attempts by status class", "reqps", "Receiver answers; `none` is a timeout or a "
         "connection error.",
         [q(f"sum by (status_class) (rate(hookline_delivery_attempts_total[{RATE}]))",
            "{{status_class}}")]),
    ]),
    ("Failures", [
        ("Retries by tier", "short", "Messages waiting in each retry tier; retries scheduled/s.",
         [q('max by (queue) (hookline_queue_messages{queue=~"hookline\\\\.retry\\\\..+"})',
            "{{queue}}"),
          q(f'sum(rate(hookline_deliveries_enqueued_total{{origin="retry"}}[{RATE}]))',
            "retries scheduled/s")]),
        ("Dead letters by reason", "reqps", "Deliveries and messages dead-lettered, by reason.",
         [q(f"sum by (reason) (rate(hookline_dead_letters_total[{RATE}]))", "{{reason}}")]),
        ("Circuits open", "short", "Endpoints whose circuit breaker is open (summed over "
         "dispatchers).",
         [q("sum(hookline_circuit_open_endpoints)", "open circuits")]),
        ("Subscriptions by status", "short", "Disabled subscriptions failed for too long or "
         "answered 410.",
         [q("max by (status) (hookline_subscriptions)", "{{status}}")]),
        ("Longest-open circuit", "s", "How long the longest-open circuit has stayed open, "
         "re-opens included (alert HooklineCircuitOpenTooLong past 30 min).",
         [q("max(hookline_circuit_open_longest_seconds)", "longest open")]),
        ("Subscriptions auto-disabled", "short", "Subscriptions Hookline disabled in the last "
         "hour, by reason (alert HooklineSubscriptionsAutoDisabled).",
         [q("sum by (reason) (increase(hookline_subscriptions_disabled_total[1h]))",
            "{{reason}}")]),
    ]),
    ("API", [
        ("API requests by status class", "reqps", "Answers of the API, ingest included.",
         [q(f"sum by (status_class) (rate(hookline_api_request_duration_seconds_count[{RATE}]))",
            "{{status_class}}")]),
        ("API refusals by reason", "reqps", "429s of the API and the portal: tenants held "
         "to their limits, addresses to their unknown credentials.",
         [q(f"sum by (reason) (rate(hookline_api_refusals_total[{RATE}]))", "{{reason}}")]),
        ("API latency by route (p95)", "s", "95th percentile per route template.",
         [q("histogram_quantile(0.95, sum by (le, route) "
            f"(rate(hookline_api_request_duration_seconds_bucket[{RATE}])))", "{{route}}")]),
    ]),
    ("Backlog", [
        ("Queue depths", "short", "Ready messages per queue (unacked ones are not counted).",
         [q('max by (queue) (hookline_queue_messages{queue!~"hookline\\\\.retry\\\\..+"})',
            "{{queue}}")]),
        ("Oldest due delivery", "s", "How long the oldest due delivery has waited.",
         [q("max(hookline_oldest_due_delivery_age_seconds)", "oldest due")]),
    ]),
    ("Fairness", [
        ("Delivery shard depths", "short", "Ready messages per delivery shard; a burst "
         "over its tenant's share waits in overflow.",
         [q('max by (queue) (hookline_queue_messages{queue=~"hookline\\\\.deliveries\\\\..+"})',
            "{{queue}}")]),
        ("Shard backlog age", "s", "Oldest due delivery of the tenants hashed to each shard: "
         "one shard far above the others is a tenant holding up its neighbours.",
         [q("max by (shard) (hookline_shard_backlog_age_seconds)", "shard {{shard}}")]),
        ("Top tenants by backlog", "short", "Due deliveries of the five tenants with the most, "
         "by rank (the deliveries API says who they are).",
         [q("max by (rank) (hookline_tenant_backlog_top_deliveries)", "#{{rank}}"),
          q("max(hookline_tenants_with_backlog)", "tenants with a backlog")]),
        ("Top tenants' oldest due", "s", "How long the oldest due delivery of each top tenant "
         "waits, by rank.",
         [q("max by (rank) (hookline_tenant_backlog_top_age_seconds)", "#{{rank}}")]),
    ]),
    ("Dispatchers", [
        ("Dispatcher in-flight", "short", "HTTP deliveries in progress, per dispatcher.",
         [q("sum by (instance) (hookline_inflight_deliveries)", "{{instance}}")]),
        ("Dispatcher saturation", "percentunit", "In-flight over allowed concurrency, all "
         "dispatchers; near 1 means scale out.",
         [q("sum(hookline_inflight_deliveries) / sum(hookline_dispatcher_concurrency)",
            "saturation")]),
        ("Running versions", "short", "Processes per version.",
         [q("count by (version) (hookline_build_info)", "{{version}}")]),
    ]),
    ("Replay", [
        ("Replay progress", "short", "Messages the running replay jobs still have to publish; "
         "running jobs.",
         [q("sum(hookline_replay_remaining_messages)", "remaining"),
          q("sum(hookline_replay_jobs_running)", "jobs running")]),
        ("Replay rate", "reqps", "Messages re-published by replay jobs, by result.",
         [q(f"sum by (result) (rate(hookline_replay_messages_total[{RATE}]))", "{{result}}")]),
    ]),
]  # fmt: skip


def panel(
    pid: int,
    title: str,
    unit: str,
    description: str,
    targets: list[tuple[str, str]],
    x: int,
    y: int,
    width: int,
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for n, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": len(panels) + 1,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        width = 24 // len(row_panels)
        for n, (title, unit, description, targets) in enumerate(row_panels):
            panels.append(
                panel(len(panels) + 1, title, unit, description, targets, n * width, y, width)
            )
        y += 8
    return {
        "uid": "hookline-overview",
        "title": "Hookline overview",
        "description": "Ingest, delivery outcomes, latency, failures, backlog, dispatchers "
        "and replay. Queries take max by (...) over backlog gauges, so any number of "
        "exporting routers is fine.",
        "tags": ["hookline"],
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "utc",
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
