"""Fair delivery end to end (issue 15): tenant A's backlog, queued before any dispatcher
runs, does not sit in front of tenant B's events. Api, router and TWO dispatchers as
separate processes over a real RabbitMQ (its own vhost) and PostgreSQL, delivering to real
receivers on 127.0.0.1.

The assertion is about order, not time (the machine is shared): every one of B's events
arrives while less than half of A's backlog was delivered. Before sharding, B's events
queued behind all of A's and arrived after it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select
from standardwebhooks import Webhook

from common.db.models import Delivery
from common.db.session import make_engine
from common.db.statuses import DeliveryStatus
from common.settings import Settings
from common.transport import open_transport
from common.transport import topology as tp
from hookline.receiver import Received, Receiver, Reply
from tests.processes import HOOKLINE, Services, free_port
from tests.services import temporary_database, temporary_vhost

BACKLOG = 3_000  # tenant A's, queued before the dispatchers start
LIGHT = 20  # tenant B's, published at 10 per second once they run
ADMIN = "integration-admin-token"
SHARDS = Settings().delivery_shards


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Services, str, str, str]]:
    with temporary_vhost() as broker_url, temporary_database() as database_url:
        env = {
            **os.environ,
            "HOOKLINE_DATABASE_URL": database_url,
            "HOOKLINE_BROKER_URL": broker_url,
            "HOOKLINE_ADMIN_TOKEN": ADMIN,
            "HOOKLINE_SECRET_KEY": secrets.token_urlsafe(32),  # a strong one, or no start
            "HOOKLINE_ALLOW_PRIVATE_TARGETS": "true",
            "HOOKLINE_RETRY_SCHEDULE": "1s,2s,4s,8s",
            "HOOKLINE_SUBSCRIPTION_REFRESH_S": "0.2",
            "HOOKLINE_LOG_FORMAT": "json",
        }
        subprocess.run([*HOOKLINE, "migrate"], env=env, check=True, timeout=120)
        stack = Services(env, tmp_path)
        port = free_port()
        stack.start("api", "api", "--port", str(port))
        stack.start("router", "router")
        api = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(api, stack)
            yield stack, api, broker_url, database_url
        finally:
            codes = stack.stop()
            assert set(codes.values()) == {0}, (codes, stack.logs_of_all())


def _wait_ready(api: str, stack: Services, timeout_s: float = 120) -> None:
    """The API answers /readyz with 200; a slow answer on a loaded machine is a retry, not
    a failure (the services' own exits are checked on every round)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, proc in stack.procs.items():
            assert proc.poll() is None, f"{name} exited early:\n{stack.log(name)}"
        try:
            if requests.get(f"{api}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"API not ready within {timeout_s}s:\n{stack.log('api')}")


def _tenant(http: requests.Session, api: str, name: str) -> dict[str, Any]:
    response = http.post(
        f"{api}/v1/tenants", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def _subscribe(http: requests.Session, api: str, tenant: dict[str, Any], url: str) -> str:
    created = http.post(  # registered by the operator, so active without a handshake
        f"{api}/v1/tenants/{tenant['id']}/subscriptions",
        json={"url": f"{url}/hooks", "event_types": ["content.*"]},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["secret"])


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _verified(received: list[Received], secret: str) -> Counter[str]:
    """Each request's webhook-id, counted, once its signature checked out."""
    webhook = Webhook(secret)
    for request in received:
        webhook.verify(request.body, request.headers)
    return Counter(request.headers["webhook-id"] for request in received)


@pytest.mark.parametrize("same_shard", [False, True], ids=["other-shard", "same-shard"])
def test_a_tenants_backlog_does_not_delay_another_tenant(
    stack: tuple[Services, str, str, str], same_shard: bool
) -> None:
    """In its own shard, B never queues behind A; hashed to A's shard, B queues behind
    only A's share of each second (the rest of A's backlog spilled to the overflow shard)."""
    processes, api, broker_url, database_url = stack
    http = requests.Session()
    http.trust_env = False
    heavy = _tenant(http, api, "heavy")
    light = _tenant(http, api, "light")
    for _ in range(200):
        if (tp.shard_of(light["id"], SHARDS) == tp.shard_of(heavy["id"], SHARDS)) == same_shard:
            break
        light = _tenant(http, api, "light")
    else:
        pytest.fail("no tenant id hashed the way this case needs")
    heavy_auth = {"Authorization": f"Bearer {heavy['api_key']}"}
    light_auth = {"Authorization": f"Bearer {light['api_key']}"}
    slow = Reply(delay_s=0.02)  # so that the backlog takes a while to drain

    with Receiver(respond=lambda _: slow).start() as heavy_rx, Receiver().start() as light_rx:
        heavy_secret = _subscribe(http, api, heavy, heavy_rx.url)
        light_secret = _subscribe(http, api, light, light_rx.url)
        time.sleep(1.0)  # the router refreshes its index every 0.2 s

        for start in range(0, BACKLOG, 1000):
            batch = [
                {"type": "content.updated", "data": {"n": n}} for n in range(start, start + 1000)
            ]
            for _ in range(30):  # the tenant's ingest limit (1,000/s by default) answers 429
                response = http.post(
                    f"{api}/v1/events/batch", json={"events": batch}, headers=heavy_auth,
                    timeout=60,
                )  # fmt: skip
                if response.status_code != 429:
                    break
                time.sleep(float(response.headers.get("retry-after", "1")))
            assert response.status_code == 202, response.text
        transport = open_transport(broker_url)
        try:
            own = tp.shard_queue(tp.shard_of(heavy["id"], SHARDS))
            overflow = tp.shard_queue(tp.OVERFLOW_SHARD)

            def queued() -> int:
                return transport.queue_depth(own) + transport.queue_depth(overflow)

            _wait(lambda: queued() == BACKLOG, 120, "the backlog was not queued")
            # Past its share of each second, A's backlog spilled to the overflow shard.
            assert transport.queue_depth(overflow) > BACKLOG // 2
        finally:
            transport.close()

        heavy_done_at_light_arrival: list[int] = []
        light_rx.on_receive = lambda _: heavy_done_at_light_arrival.append(heavy_rx.count)
        processes.start("dispatcher-1", "dispatcher", "--concurrency", "8")
        processes.start("dispatcher-2", "dispatcher", "--concurrency", "8")
        _wait(lambda: heavy_rx.count > 0, 60, "the dispatchers never started delivering")

        def publish_light() -> None:
            for n in range(LIGHT):
                response = http.post(
                    f"{api}/v1/events",
                    json={"type": "content.updated", "data": {"light": n}},
                    headers=light_auth,
                    timeout=30,
                )
                assert response.status_code == 202, response.text
                time.sleep(0.1)

        publisher = threading.Thread(target=publish_light)
        publisher.start()
        publisher.join(60)
        assert light_rx.wait_for(LIGHT, timeout_s=120), processes.logs_of_all()
        assert heavy_rx.wait_for(BACKLOG, timeout_s=300), processes.logs_of_all()
        time.sleep(1.0)  # anything extra (a duplicate) would arrive now

        # Every one of B's events arrived before A's backlog was half delivered.
        assert len(heavy_done_at_light_arrival) == LIGHT
        assert max(heavy_done_at_light_arrival) < BACKLOG // 2, heavy_done_at_light_arrival
        heavy_ids = _verified(heavy_rx.received, heavy_secret)
        light_ids = _verified(light_rx.received, light_secret)

    assert len(heavy_ids) == BACKLOG and set(heavy_ids.values()) == {1}
    assert len(light_ids) == LIGHT and set(light_ids.values()) == {1}
    engine = make_engine(database_url)
    try:
        with engine.connect() as db:
            grouped = db.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
            assert {status: count for status, count in grouped} == {
                DeliveryStatus.SUCCEEDED: BACKLOG + LIGHT
            }
    finally:
        engine.dispose()
