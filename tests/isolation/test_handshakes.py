"""Issue 15.2: the API never waits on a tenant's endpoint.

Tenant A sends 45 verification handshakes at once to an endpoint that accepts and never
answers, through a real uvicorn server. The handshakes run on the gate's own threads, at
most A's limit (4) at once; the rest are refused at once with 429. Meanwhile tenant B's
list, ingest and the probes answer within `PROMPT_S`, far below the handshake's deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from hookline.api.deps import Services
from tests.api.support import ADMIN_TOKEN, Api
from tests.isolation.conftest import serve, wait_until

HANDSHAKES = 45
PROMPT_S = 2.0
HANDSHAKE_S = 6.0  # the handshake's deadline in these tests (10 s by default)
EVENT = {"type": "order.paid", "data": {}}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def registered(api: Api, tenant_id: str, url: str) -> str:
    """A subscription the operator registered for the tenant (active, no handshake)."""
    body = {"url": url, "event_types": ["order.*"]}
    response = api.client.post(f"/v1/tenants/{tenant_id}/subscriptions", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_hanging_handshakes_of_one_tenant_hold_up_no_other_tenant_nor_the_probes(
    make_api: Callable[..., Api], black_hole: int
) -> None:
    # Room for all 45 at once: what refuses them here is the handshake limit alone (each
    # request holds one of its tenant's `max_concurrent_requests` places while it waits).
    api = make_api(allow_http=True, request_timeout_s=HANDSHAKE_S,
                   tenant_max_concurrent_requests=HANDSHAKES)  # fmt: skip
    a_id, a_auth = api.tenant("a")
    b_id, b_auth = api.tenant("b")
    hanging = registered(api, a_id, f"http://127.0.0.1:{black_hole}/hooks")
    registered(api, b_id, "http://127.0.0.1:9/b")
    gate = api.app.state.services.handshakes
    with serve(api.app) as base, ThreadPoolExecutor(HANDSHAKES) as pool:
        verify = f"{base}/v1/subscriptions/{hanging}/verify"
        answers = [
            pool.submit(timed, lambda: requests.post(verify, headers=a_auth, timeout=30))
            for _ in range(HANDSHAKES)
        ]
        wait_until(lambda: gate.running(a_id) == 4)

        b_calls = {
            "list": lambda: requests.get(f"{base}/v1/subscriptions", headers=b_auth, timeout=30),
            "ingest": lambda: requests.post(f"{base}/v1/events", json=EVENT, headers=b_auth),
            "healthz": lambda: requests.get(f"{base}/healthz", timeout=30),
            "readyz": lambda: requests.get(f"{base}/readyz", timeout=30),
        }
        for name, call in b_calls.items():
            response, elapsed_s = timed(call)
            assert response.status_code in (200, 202), (name, response.text)
            assert elapsed_s < PROMPT_S, f"{name} took {elapsed_s:.2f} s"
        assert gate.running(a_id) == 4, "the handshakes were still hanging meanwhile"
        results = [future.result() for future in answers]

    refused = [(r, s) for r, s in results if r.status_code == 429]
    ran = [(r, s) for r, s in results if r.status_code == 200]
    assert len(ran) == 4 and len(refused) == HANDSHAKES - 4
    for response, elapsed_s in refused:
        assert response.headers["Retry-After"] == "5"
        assert response.json()["error"]["code"] == "too_many_handshakes"
        assert elapsed_s < PROMPT_S
    for response, elapsed_s in ran:  # the handshake's semantics: its result, in full time
        assert response.json()["verified"] is False
        assert "did not answer" in response.json()["detail"]
        assert elapsed_s >= HANDSHAKE_S - 0.5


def test_the_handshake_limit_holds_across_api_replicas(
    make_api: Callable[..., Api], black_hole: int
) -> None:
    first = make_api(allow_http=True, request_timeout_s=HANDSHAKE_S)
    second = make_api(allow_http=True, request_timeout_s=HANDSHAKE_S)
    a_id, a_auth = first.tenant("a")
    hanging = registered(first, a_id, f"http://127.0.0.1:{black_hole}/hooks")
    limits = {"max_handshakes": 2}
    patched = first.client.patch(f"/v1/tenants/{a_id}/limits", json=limits, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    gate = first.app.state.services.handshakes
    with serve(first.app) as base, ThreadPoolExecutor(2) as pool:
        verify = f"{base}/v1/subscriptions/{hanging}/verify"
        held = [pool.submit(requests.post, verify, headers=a_auth, timeout=30) for _ in range(2)]
        wait_until(lambda: gate.running(a_id) == 2)
        time.sleep(0.3)  # both leases written

        response, elapsed_s = timed(
            lambda: second.client.post(f"/v1/subscriptions/{hanging}/verify", headers=a_auth)
        )
        assert response.status_code == 429, response.text
        assert response.headers["Retry-After"] == "5"
        assert elapsed_s < PROMPT_S
        assert [future.result().status_code for future in held] == [200, 200]

    # The leases are gone with their handshakes: the other replica may run one now.
    after = second.client.post(f"/v1/subscriptions/{hanging}/verify", headers=a_auth)
    assert after.status_code == 200, after.text


def test_creating_a_subscription_runs_its_handshake_on_the_gate_and_keeps_its_answer(
    make_api: Callable[..., Api], black_hole: int
) -> None:
    api = make_api(allow_http=True, request_timeout_s=1.0)
    _, auth = api.tenant("a")
    body: dict[str, Any] = {"url": f"http://127.0.0.1:{black_hole}/x", "event_types": ["a.*"]}

    created = api.client.post("/v1/subscriptions", json=body, headers=auth)

    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending_verification"
    assert created.json()["secret"].startswith("whsec_")
    services: Services = api.app.state.services
    assert services.handshakes.running("a") == 0
