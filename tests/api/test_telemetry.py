"""API request metrics: a histogram by route template, method and status class."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.support import Api


def counts(api: Api) -> dict[tuple[str, str, str], float]:
    text = generate_latest(api.metrics.registry).decode()
    return {
        (s.labels["route"], s.labels["method"], s.labels["status_class"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "hookline_api_request_duration_seconds"
        for s in family.samples
        if s.name.endswith("_count")
    }


def test_requests_are_counted_by_route_template_method_and_status_class(api: Api) -> None:
    _, headers = api.tenant()
    event = {"type": "order.created", "operation": "sync", "data": {"n": 1}}
    assert api.client.post("/v1/events", json=event, headers=headers).status_code == 202
    api.client.get("/v1/subscriptions/sub_nope", headers=headers)
    api.client.get("/v1/subscriptions/sub_other", headers=headers)
    api.client.get("/no/such/path/4711")

    seen = counts(api)
    assert seen[("/v1/events", "POST", "2xx")] == 1  # the fast ingest path is measured too
    assert seen[("/v1/subscriptions/{subscription_id}", "GET", "4xx")] == 2  # one series
    assert seen[("unmatched", "GET", "4xx")] == 1
    assert not any("sub_nope" in route or "4711" in route for route, _, _ in seen)


def test_the_ingest_route_has_its_series_before_any_request(api: Api) -> None:
    assert counts(api)[("/v1/events", "POST", "5xx")] == 0
