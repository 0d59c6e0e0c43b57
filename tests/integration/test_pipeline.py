"""The walking skeleton end to end: api, router and dispatcher as separate processes over a
real RabbitMQ (its own vhost) and PostgreSQL, delivering to a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select
from standardwebhooks import Webhook

from common.db.models import Attempt, Delivery, EventRow
from common.db.session import make_engine
from common.db.statuses import DeliveryStatus
from common.wire import webhook_id_for
from hookline.receiver import Receiver
from tests.processes import HOOKLINE, Services, free_port
from tests.services import temporary_database, temporary_vhost

EVENTS = 1_000
ADMIN = "integration-admin-token"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Services, str, str]]:
    with temporary_vhost() as broker_url, temporary_database() as database_url:
        env = {
            **os.environ,
            "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_BROKER_URL": broker_url,
            "HOOKLINE_ADMIN_TOKEN": ADMIN,
            "HOOKLINE_SECRET_KEY": "n-w4awxvMsa9kwOv9aJDLgEg3EoBf1VE72ere9Qp9bA",
            "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
            "HOOKLINE_RETRY_SCHEDULE": "1s,2s",
            "HOOKLINE_SUBSCRIPTION_REFRESH_S": "0.2",
            "HOOKLINE_LOG_FORMAT": "json",
        }
        subprocess.run([*HOOKLINE, "migrate"], env=env, check=True, timeout=120)
        stack = Services(env, tmp_path)
        port = free_port()
        stack.start("api", "api", "--port", str(port))
        stack.start("router", "router")
        stack.start("dispatcher", "dispatcher", "--concurrency", "16")
        api = f"http://127.0.0.1:{port}"
        try:
            wait_ready(api, stack)
            yield stack, api, database_url
        finally:
            codes = stack.stop()
            assert codes == {"api": 0, "router": 0, "dispatcher": 0}, (
                codes,
                {name: stack.log(name) for name in stack.procs},
            )


def wait_ready(api: str, stack: Services, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc in stack.procs.items():
            assert proc.poll() is None, f"{name} exited early:\n{stack.log(name)}"
        try:
            if requests.get(f"{api}/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"API not ready within {timeout_s}s:\n{stack.log('api')}")


def test_thousand_events_arrive_signed_exactly_as_sent(stack: tuple[Services, str, str]) -> None:
    processes, api, database_url = stack
    http = requests.Session()
    http.trust_env = False
    tenant = http.post(
        f"{api}/v1/tenants", json={"name": "site-a"}, headers={"Authorization": f"Bearer {ADMIN}"}
    ).json()
    auth = {"Authorization": f"Bearer {tenant['api_key']}"}
    with Receiver().start() as receiver:
        created = http.post(  # registered by the operator, so active without a handshake
            f"{api}/v1/tenants/{tenant['id']}/subscriptions",
            json={"url": f"{receiver.url}/hooks", "event_types": ["content.*"]},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        time.sleep(1.0)  # the router refreshes its index every 0.2 s

        sent: dict[str, dict[str, object]] = {}  # by the webhook-id each must arrive with

        def publish(n: int) -> tuple[str, dict[str, object]]:
            body: dict[str, object] = {
                "type": "content.updated",
                "data": {"page": f"p{n}", "rev": n, "ok": True},
            }
            response = http.post(f"{api}/v1/events", json=body, headers=auth, timeout=30)
            assert response.status_code == 202, response.text
            return response.json()["id"], body

        with ThreadPoolExecutor(8) as pool:
            for event_id, body in pool.map(publish, range(EVENTS)):
                sent[webhook_id_for(tenant["id"], event_id)] = body
        assert len(sent) == EVENTS

        arrived = receiver.wait_for(EVENTS, timeout_s=120)
        assert arrived, (
            f"{receiver.count}/{EVENTS} arrived\n"
            f"{processes.log('router')}\n{processes.log('dispatcher')}"
        )
        time.sleep(1.0)  # anything extra (a duplicate) would arrive now
        received = list(receiver.received)

    by_id = {}
    webhook = Webhook(secret)
    for request in received:
        payload = webhook.verify(request.body, request.headers)
        webhook_id = request.headers["webhook-id"]
        assert webhook_id in sent, f"received an event that was never sent: {webhook_id}"
        assert payload["type"] == sent[webhook_id]["type"]
        assert payload["data"] == sent[webhook_id]["data"]
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"].startswith("Hookline/")
        by_id[webhook_id] = request
    assert set(by_id) == set(sent)
    assert len(received) == EVENTS, "a delivery arrived twice in a fault-free run"

    engine = make_engine(database_url)
    try:
        with engine.connect() as db:
            assert db.scalar(select(func.count()).select_from(EventRow)) == EVENTS
            grouped = db.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
            statuses = {status: count for status, count in grouped}
            assert statuses == {DeliveryStatus.SUCCEEDED: EVENTS}
            assert db.scalar(select(func.count()).select_from(Attempt)) == EVENTS
    finally:
        engine.dispose()
    assert json.loads(received[0].body)["type"] == "content.updated"
