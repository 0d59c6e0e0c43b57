"""Router and dispatcher probes on the metrics port, and the backlog gauges, against the
real RabbitMQ and PostgreSQL (and a broker address where nothing listens)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from common.db import migrate
from common.settings import Settings
from common.transport import Outgoing, topology
from hookline.runtime import Runtime, build_runtime, serve_probes
from tests import builders
from tests.processes import free_port
from tests.services import temporary_database, temporary_vhost


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    """One vhost and database for the module (creating them is the slow part)."""
    with ExitStack() as stack:
        settings = Settings(
            broker_url=stack.enter_context(temporary_vhost()),
            database_url=stack.enter_context(temporary_database()),
            retry_schedule="1s,1m",
        )
        migrate.upgrade(settings.database_url)
        runtime = build_runtime(settings)
        stack.callback(runtime.close)
        runtime.transport.declare(topology.build(settings.retry_tiers_s))
        yield runtime


def get(port: int, path: str) -> requests.Response:
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def wait_for(port: int, path: str, status: int, timeout_s: float = 20) -> requests.Response:
    deadline = time.monotonic() + timeout_s
    while (response := get(port, path)).status_code != status and time.monotonic() < deadline:
        time.sleep(0.2)
    return response


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = get(port, "/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip


def test_probes_answer_alive_and_ready_when_broker_and_database_answer(runtime: Runtime) -> None:
    probes = serve_probes(runtime, free_port())
    try:
        assert get(probes.port, "/healthz").status_code == 200
        ready = wait_for(probes.port, "/readyz", 200)
        assert ready.status_code == 200 and ready.text.strip() == "ready"
        assert ("hookline_build_info", (("version", "0.1.0"),)) in samples(probes.port)
        assert get(probes.port, "/nothing").status_code == 404
    finally:
        probes.close()


def test_readiness_fails_fast_and_names_the_broker_when_it_is_unreachable(
    runtime: Runtime,
) -> None:
    settings = runtime.settings.model_copy(
        update={"broker_url": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"}
    )
    unreachable = build_runtime(settings)
    probes = serve_probes(unreachable, free_port())
    try:
        started = time.monotonic()
        assert get(probes.port, "/readyz").status_code == 503  # not checked yet
        assert time.monotonic() - started < 2
        # The broker check keeps retrying the connection; readiness does not wait for it.
        deadline = time.monotonic() + 20
        while "not checked yet" in (answer := get(probes.port, "/readyz")).text and (
                time.monotonic() < deadline):  # fmt: skip
            time.sleep(0.2)
        assert answer.status_code == 503
        assert answer.text.strip() in ("broker unreachable", "broker did not answer within 3s")
        assert "database" not in answer.text
        assert get(probes.port, "/healthz").status_code == 200
    finally:
        probes.close()
        unreachable.close()


def test_the_backlog_gauges_show_queue_depths_the_oldest_due_delivery_and_subscriptions(
    runtime: Runtime,
) -> None:
    with runtime.sessionmaker.begin() as session:
        tenant = builders.tenant(session)
        subscription, _ = builders.subscription(session, tenant.id, "https://example.com/h")
        builders.subscription(session, tenant.id, "https://example.com/off", status="disabled")
        builders.delivery(session, builders.event(tenant.id), subscription.id)
    runtime.transport.publish(
        [Outgoing(topology.DELIVERIES, topology.DELIVERY_ROUTING_KEY, b"{}")] * 3
    )
    runtime.transport.publish([Outgoing(topology.RETRY, "1m", b"{}")] * 2)
    runtime.transport.publish([Outgoing(topology.RETRY, "72s", b"{}")])  # 1m, jittered +20 %
    time.sleep(1.5)  # the pending delivery row ages
    probes = serve_probes(runtime, free_port(), backlog=True)
    try:
        deadline = time.monotonic() + 20
        while ("hookline_backlog_up", (("source", "broker"),)) not in (seen := samples(
                probes.port)) and time.monotonic() < deadline:  # fmt: skip
            time.sleep(0.2)
        assert seen[("hookline_backlog_up", (("source", "broker"),))] == 1
        assert seen[("hookline_backlog_up", (("source", "database"),))] == 1
        assert seen[("hookline_queue_messages", (("queue", "hookline.deliveries"),))] == 3
        assert seen[("hookline_queue_messages", (("queue", "hookline.retry.1m"),))] == 2
        assert seen[("hookline_queue_messages", (("queue", "hookline.retry.1s"),))] == 0
        assert seen[("hookline_queue_messages", (("queue", "hookline.retry.72s"),))] == 1
        assert seen[("hookline_queue_messages", (("queue", "hookline.retry.800ms"),))] == 0
        assert seen[("hookline_queue_messages", (("queue", "hookline.dead"),))] == 0
        assert 1.0 <= seen[("hookline_oldest_due_delivery_age_seconds", ())] < 60
        assert seen[("hookline_subscriptions", (("status", "active"),))] == 1
        assert seen[("hookline_subscriptions", (("status", "disabled"),))] == 1
        assert seen[("hookline_subscriptions", (("status", "paused"),))] == 0
    finally:
        probes.close()
