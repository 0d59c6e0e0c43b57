"""Every panel of the Grafana dashboard shows data from a real Prometheus scraping a real,
loaded stack (RabbitMQ, PostgreSQL, `hookline api|router|dispatcher` processes), and the
alert rules evaluate against the live metrics without errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
import requests

from common.db import migrate
from common.db.session import make_engine, make_sessionmaker
from common.secretbox import SecretBox
from hookline.services.keys import new_tenant
from tests import builders
from tests.deploy.tools import DEPLOY, require_tool
from tests.observability.prom import Prometheus
from tests.processes import Services, free_port
from tests.services import temporary_database, temporary_vhost

DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hookline-overview.json"
RULES = DEPLOY / "prometheus" / "rules" / "hookline.rules.yml"
SECRET_KEY = "8VNl4XRS_9pUbyEPX0Id5ak-rmd2InG0yGgGAjj1f7g"
LOAD_S = 20.0  # long enough for every rate window to hold several scrapes
RATE_WINDOW = "10s"


@dataclass
class Stack:
    prometheus: Prometheus
    services: Services
    api_url: str
    api_key: str
    probe_ports: dict[str, int]


def wait_http(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s}s")


def receiver(stack: ExitStack, status: int) -> str:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hookline.receiver", "--port", str(port), "--status", str(status),
         "--every-s", "3600"], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    stack.callback(proc.wait, 20)
    stack.callback(proc.terminate)
    wait_http(f"http://127.0.0.1:{port}/")
    return f"http://127.0.0.1:{port}/hooks"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    binary = require_tool("prometheus")
    workdir = tmp_path_factory.mktemp("dashboard")
    with ExitStack() as stack:
        broker_url = stack.enter_context(temporary_vhost())
        database_url = stack.enter_context(temporary_database())
        migrate.upgrade(database_url)
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        ok_url, failing_url = receiver(stack, 200), receiver(stack, 500)
        box = SecretBox(SECRET_KEY)
        with make_sessionmaker(engine).begin() as session:
            tenant, api_key = new_tenant(session, "dashboard")
            builders.subscription(session, tenant.id, ok_url, event_types=["order.*"], box=box)
            # Every attempt fails: retries through both tiers, then dead letters.
            builders.subscription(session, tenant.id, failing_url, event_types=["order.*"],
                                  box=box)  # fmt: skip
        services = Services(
            {**os.environ, "HOOKLINE_DATABASE_URL": database_url, "HOOKLINE_BROKER_URL": broker_url,
             "HOOKLINE_SECRET_KEY": SECRET_KEY, "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
             "HOOKLINE_RETRY_SCHEDULE": "1s,2s", "HOOKLINE_LOG_LEVEL": "WARNING",
             # Keep the failing endpoint's circuit closed, so its deliveries go through
             # every retry tier to the dead-letter queue instead of being deferred,
             # and is not disabled after its hundredth dead letter.
             "HOOKLINE_CIRCUIT_FAILURE_THRESHOLD": "1000000",
             "HOOKLINE_AUTO_DISABLE_DEAD_DELIVERIES": "0"},
            workdir,
        )  # fmt: skip
        stack.callback(services.kill)
        api_port, router_port, dispatcher_port = free_port(), free_port(), free_port()
        services.start("api", "api", "--port", str(api_port))
        services.start("router", "router", "--metrics-port", str(router_port))
        services.start("dispatcher", "dispatcher", "--concurrency", "8",
                       "--metrics-port", str(dispatcher_port))  # fmt: skip
        for port in (api_port, router_port, dispatcher_port):
            wait_http(f"http://127.0.0.1:{port}/metrics")
        prometheus = Prometheus(
            binary, workdir,
            {"hookline-api": [api_port], "hookline-router": [router_port],
             "hookline-dispatcher": [dispatcher_port]},
            rule_files=[RULES],
        )  # fmt: skip
        stack.callback(prometheus.close)
        prometheus.wait_ready()
        prometheus.wait_scraping(3)  # before the load: its first seconds are counted too
        probe_ports = {"api": api_port, "router": router_port, "dispatcher": dispatcher_port}
        yield Stack(prometheus, services, f"http://127.0.0.1:{api_port}", api_key, probe_ports)


def publish_load(stack: Stack, seconds: float, per_s: float = 40) -> int:
    """POST events through the API at a steady rate; returns how many were accepted."""
    accepted = 0
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {stack.api_key}"
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        response = session.post(
            f"{stack.api_url}/v1/events",
            json={"type": "order.created", "data": {"n": n}},
            timeout=10,
        )
        accepted += response.status_code == 202
        n += 1
        time.sleep(max(0.0, start + n / per_s - time.monotonic()))
    return accepted


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", RATE_WINDOW))
        for panel in dashboard["panels"] if panel["type"] != "row"
        for target in panel["targets"]
    ]  # fmt: skip


@pytest.fixture(scope="module")
def loaded(stack: Stack) -> Iterator[Stack]:
    """The stack after `LOAD_S` of steady traffic, half of it to a failing endpoint; the
    load keeps going in the background while the panels are queried."""
    stop = threading.Event()
    counts: list[int] = []

    def keep_publishing() -> None:
        while not stop.is_set():
            counts.append(publish_load(stack, 1.0))

    thread = threading.Thread(target=keep_publishing, daemon=True)
    thread.start()
    time.sleep(LOAD_S)
    alive = stack.services.alive()
    assert all(code is None for code in alive.values()), stack.services.logs_of_all()
    assert sum(counts) > 0, "the API accepted no event"
    yield stack
    stop.set()
    thread.join(10)


@pytest.mark.parametrize("service", ["api", "router", "dispatcher"])
def test_every_service_answers_liveness_and_readiness_probes(loaded: Stack, service: str) -> None:
    base = f"http://127.0.0.1:{loaded.probe_ports[service]}"
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200


def test_every_scrape_target_is_up(loaded: Stack) -> None:
    health = loaded.prometheus.targets_up()
    assert len(health) == 3 and set(health.values()) == {"up"}, health


@pytest.mark.parametrize(("title", "expr"), panel_queries())
def test_every_dashboard_query_returns_data(loaded: Stack, title: str, expr: str) -> None:
    # A quantile or ratio is NaN while its window has no observation; under steady load
    # that can only be the first seconds, so give it a few more scrapes.
    deadline = time.monotonic() + 15
    while not (values := loaded.prometheus.finite_values(expr)) and time.monotonic() < deadline:
        time.sleep(1)
    assert values, f"panel {title!r}: {expr} returned no finite value"


def test_the_panels_tell_what_the_load_did(loaded: Stack) -> None:
    prom = loaded.prometheus

    def total(expr: str) -> float:
        return prom.finite_values(f"sum(increase({expr}[{int(LOAD_S) - 5}s]))")[0]

    seen = {
        "accepted": total('hookline_events_ingested_total{result="accepted"}'),
        "succeeded": total('hookline_delivery_attempts_total{outcome="success"}'),
        "retried": total('hookline_delivery_attempts_total{outcome="retry",status_class="5xx"}'),
        "dead": total('hookline_dead_letters_total{reason="max_attempts"}'),
        "deferred": total('hookline_delivery_attempts_total{outcome="deferred"}'),
    }
    assert seen["accepted"] > 100 and seen["succeeded"] > 50, seen
    # The second endpoint fails everything: retries through both tiers, then dead letters.
    assert seen["retried"] > 50 and seen["dead"] > 10, seen
    retry_queues = 'hookline_queue_messages{queue=~"hookline\\\\.retry\\\\..+"}'
    tiers = {s["metric"]["queue"] for s in prom.query(f"max by (queue) ({retry_queues})")}
    # Every tier a retry may go to: each delay of 1s,2s and its ±20 % jitter variants.
    assert tiers == {f"hookline.retry.{t}" for t in ("800ms", "1s", "1200ms", "1600ms", "2s",
                                                      "2400ms")}  # fmt: skip
    assert prom.finite_values("sum(hookline_dispatcher_concurrency)") == [8.0]


def test_the_alert_rules_evaluate_without_errors_on_live_metrics(loaded: Stack) -> None:
    groups = loaded.prometheus.api("rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) >= 9
    broken = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert not broken, broken
