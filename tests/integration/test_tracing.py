"""Tracing across real processes: api, router and dispatcher over a real RabbitMQ (its own
vhost) and PostgreSQL, exporting OTLP/HTTP to a collector on 127.0.0.1 (tests/
otlp_collector.py), delivering to a real receiver. One trace id from the caller's request
to every settle, parents and attributes as documented, and the `traceparent` only on the
opted-in subscription's webhooks; with tracing off, nothing is exported or sent."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from standardwebhooks import Webhook

from common.tracing import parse
from hookline.receiver import Receiver
from tests.integration.test_pipeline import wait_ready
from tests.otlp_collector import CollectedSpan, Collector
from tests.processes import HOOKLINE, Services, free_port
from tests.services import temporary_database, temporary_vhost

ADMIN = "integration-admin-token"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@contextmanager
def stack(tmp_path: Path, otel: dict[str, str]) -> Iterator[tuple[str, Services]]:
    with temporary_vhost() as broker_url, temporary_database() as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update({
            "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_BROKER_URL": broker_url,
            "HOOKLINE_ADMIN_TOKEN": ADMIN,
            "HOOKLINE_SECRET_KEY": "n-w4awxvMsa9kwOv9aJDLgEg3EoBf1VE72ere9Qp9bA",
            "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
            "HOOKLINE_ALLOW_HTTP": "true",
            "HOOKLINE_SUBSCRIPTION_REFRESH_S": "0.2",
            **otel,
        })  # fmt: skip
        subprocess.run([*HOOKLINE, "migrate"], env=env, check=True, timeout=120)
        services = Services(env, tmp_path)
        port = free_port()
        services.start("api", "api", "--port", str(port))
        services.start("router", "router")
        services.start("dispatcher", "dispatcher", "--concurrency", "4")
        api = f"http://127.0.0.1:{port}"
        try:
            wait_ready(api, services)
            yield api, services
        finally:
            codes = services.stop()
            assert codes == {"api": 0, "router": 0, "dispatcher": 0}, services.logs_of_all()


def deliver_one_order(api: str, receiver: Receiver) -> tuple[str, dict[str, str]]:
    """A tenant with an opted-in and a plain subscription, and one event published with the
    caller's context; returns the event id and each path's secret."""
    http = requests.Session()
    http.trust_env = False
    admin = {"Authorization": f"Bearer {ADMIN}"}
    tenant = http.post(f"{api}/v1/tenants", json={"name": "shop"}, headers=admin).json()
    secrets = {}
    for path, propagate in (("/traced", True), ("/plain", False)):
        made = http.post(
            f"{api}/v1/tenants/{tenant['id']}/subscriptions",
            json={"url": receiver.url + path, "event_types": ["order.*"],
                  "propagate_trace": propagate},
            headers=admin,
        )  # fmt: skip
        assert made.status_code == 201, made.text
        secrets[path] = made.json()["secret"]
    time.sleep(1.0)  # the router refreshes its index every 0.2 s
    answer = http.post(
        f"{api}/v1/events",
        json={"type": "order.created", "data": {"order": 7}},
        headers={"Authorization": f"Bearer {tenant['api_key']}", "traceparent": CALLER,
                 "tracestate": "shop=checkout"},
        timeout=30,
    )  # fmt: skip
    assert answer.status_code == 202, answer.text
    assert receiver.wait_for(2, timeout_s=60)
    return answer.json()["id"], secrets


def _wait_for(collector: Collector, name: str, count: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(span.name == name for span in collector.spans) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name}: fewer than {count} spans exported: {collector.spans}")


def test_one_trace_from_the_callers_request_to_each_settle_across_processes(
    tmp_path: Path,
) -> None:
    with Collector() as collector, Receiver().start() as receiver:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,  # enough to turn tracing on
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export every 0.1 s, not every 5 s
        }
        with stack(tmp_path, otel) as (api, _):
            event_id, secrets = deliver_one_order(api, receiver)
            _wait_for(collector, "hookline.settle", 2)
        received = {request.path: request for request in receiver.received}
        spans = collector.spans

    def named(name: str) -> list[CollectedSpan]:
        return [span for span in spans if span.name == name]

    (ingest,) = named("hookline.ingest")
    (route,) = [span for span in named("hookline.route") if span.trace_id == TRACE_ID]
    attempts, settles = named("hookline.attempt"), named("hookline.settle")
    assert len(attempts) == len(settles) == 2
    # One trace id from the request to both settles, each span from its own process.
    assert {span.trace_id for span in (ingest, route, *attempts, *settles)} == {TRACE_ID}
    assert (ingest.service, route.service) == ("hookline-api", "hookline-router")
    assert {span.service for span in attempts + settles} == {"hookline-dispatcher"}
    assert (ingest.kind, route.kind) == ("server", "consumer")
    assert {span.kind for span in attempts} == {"client"}
    # Parent links: caller -> ingest -> route -> attempt -> settle.
    assert ingest.parent_id == CALLER_SPAN
    assert route.parent_id == ingest.span_id
    assert route.attributes["hookline.event.id"] == event_id
    assert route.attributes["hookline.deliveries"] == 2
    assert {span.parent_id for span in attempts} == {route.span_id}
    assert sorted(span.parent_id for span in settles) == sorted(a.span_id for a in attempts)
    for attempt in attempts:
        assert attempt.attributes["server.address"] == "127.0.0.1"
        assert attempt.attributes["http.response.status_code"] == 200
        assert attempt.attributes["hookline.attempt"] == 1
        assert attempt.attributes["hookline.outcome"] == "success"
        assert attempt.attributes["hookline.delivery.id"].startswith("dlv_")
        assert attempt.attributes["hookline.tenant.id"].startswith("ten_")
        assert not attempt.error
        assert not any(receiver.url in str(value) for value in attempt.attributes.values())

    # Only the opted-in receiver got a context: its attempt's, in the caller's trace.
    traced, plain = received["/traced"], received["/plain"]
    sent = parse(traced.headers["traceparent"], traced.headers.get("tracestate"))
    assert sent is not None and sent.trace_id == TRACE_ID
    (traced_attempt,) = [a for a in attempts if a.span_id == sent.span_id]
    assert sent.tracestate == "shop=checkout"
    assert "traceparent" not in plain.headers and "tracestate" not in plain.headers
    assert traced_attempt.attributes["hookline.subscription.id"].startswith("sub_")
    for path, request in received.items():
        Webhook(secrets[path]).verify(request.body, request.headers)


def test_with_tracing_off_nothing_is_exported_and_no_context_is_sent(tmp_path: Path) -> None:
    with Collector() as collector, Receiver().start() as receiver:
        # Pointed at the collector, and switched off: the switch wins.
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SDK_DISABLED": "true"}
        with stack(tmp_path, otel) as (api, _):
            deliver_one_order(api, receiver)
        received = receiver.received

    assert len(received) == 2
    assert all("traceparent" not in request.headers for request in received)
    assert (collector.requests, collector.spans) == (0, [])
