"""Issue 15.3: per-tenant API limits, held across API replicas (two apps on one database),
set per tenant through the admin API."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select

from common.db.models import Subscription
from tests.api.support import ADMIN_TOKEN, Api, assert_error

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def event(n: int = 0) -> dict[str, Any]:
    return {"type": "order.paid", "data": {"n": n}}


def batch(size: int) -> dict[str, Any]:
    return {"events": [event(n) for n in range(size)]}


def at_window_start() -> None:
    """Wait for the start of the next one-second window, so a test's requests share one."""
    time.sleep(1.0 - time.time() % 1.0 + 0.01)


def set_limits(api: Api, tenant_id: str, **limits: Any) -> dict[str, Any]:
    response = api.client.patch(f"/v1/tenants/{tenant_id}/limits", json=limits, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_ingest_rate_is_counted_in_events_and_shared_by_two_api_replicas(
    make_api: Callable[..., Api],
) -> None:
    first = make_api(tenant_ingest_rate_per_s=100)
    second = make_api(tenant_ingest_rate_per_s=100)
    _, auth = first.tenant("a")
    for _ in range(3):  # a window can end between the two requests on a slow machine
        at_window_start()
        window = int(time.time())
        accepted = first.client.post("/v1/events/batch", json=batch(60), headers=auth)
        refused = second.client.post("/v1/events/batch", json=batch(60), headers=auth)
        single = second.client.post("/v1/events", json=event(), headers=auth)
        if int(time.time()) == window:
            break
        first.published(), second.published()
    assert accepted.status_code == 202, accepted.text
    message = assert_error(refused, 429, "rate_limited")
    assert "100 events/s" in message
    assert refused.headers["Retry-After"] == "1"
    # A single event still fits in what is left of this second (40 of 100).
    assert single.status_code == 202, single.text
    assert len(first.published()) + len(second.published()) == 61


def test_the_full_ingest_route_applies_the_same_limit(make_api: Callable[..., Api]) -> None:
    api = make_api(tenant_ingest_rate_per_s=1)  # one event a second
    _, auth = api.tenant("a")
    keyed = {**auth, "Idempotency-Key": "evt_full_route_1"}  # past the fast path
    at_window_start()

    assert api.client.post("/v1/events", json=event(), headers=auth).status_code == 202
    refused = api.client.post("/v1/events", json=event(), headers=keyed)

    assert_error(refused, 429, "rate_limited")
    assert refused.headers["Retry-After"] == "1"
    later = api.client.post("/v1/events", json=event(), headers=keyed)
    assert later.status_code == 429  # a 429 is not remembered for the key
    time.sleep(1.0)
    assert api.client.post("/v1/events", json=event(), headers=keyed).status_code == 202


def test_an_override_through_the_admin_route_changes_the_tenants_limits(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(tenant_ingest_rate_per_s=50, tenant_max_batch_events=100)
    a_id, a_auth = api.tenant("a")
    _, b_auth = api.tenant("b")

    body = set_limits(api, a_id, ingest_rate_per_s=500, max_batch_events=20)

    assert body["effective"]["ingest_rate_per_s"] == 500
    assert body["overrides"]["max_handshakes"] is None
    assert body["defaults"]["ingest_rate_per_s"] == 50
    too_big = api.client.post("/v1/events/batch", json=batch(21), headers=a_auth)
    assert "at most 20" in assert_error(too_big, 422, "batch_too_large")
    set_limits(api, a_id, max_batch_events=None)  # back to the default, 100
    at_window_start()
    assert api.client.post("/v1/events/batch", json=batch(100), headers=a_auth).status_code == 202
    # Tenant B keeps the defaults: 50 a second, so 100 at once can never pass.
    refused = api.client.post("/v1/events/batch", json=batch(100), headers=b_auth)
    assert "at most 50" in assert_error(refused, 422, "batch_too_large")
    shown = api.client.get(f"/v1/tenants/{a_id}/limits", headers=ADMIN).json()
    assert shown["effective"] == {
        "ingest_rate_per_s": 500, "max_batch_events": 100, "max_handshakes": 4,
        "replay_rate_per_s": 500, "replay_starts_per_min": 10, "max_subscriptions": 100,
        "requests_per_s": 100, "max_concurrent_requests": 8,
    }  # fmt: skip


def test_limits_are_the_admins_alone_and_bounded(make_api: Callable[..., Api]) -> None:
    api = make_api()
    a_id, a_auth = api.tenant("a")
    url = f"/v1/tenants/{a_id}/limits"

    assert api.client.get(url, headers=a_auth).status_code == 401
    assert api.client.patch(url, json={"max_handshakes": 100}, headers=a_auth).status_code == 401
    assert_error(api.client.patch(url, json={"max_batch_events": 1001}, headers=ADMIN), 422)
    assert_error(api.client.patch(url, json={"ingest_rate_per_s": 0}, headers=ADMIN), 422)
    # Found by the fuzzer: a rate so slow its window overflows, and `true` taken for 1.
    assert_error(api.client.patch(url, json={"ingest_rate_per_s": 5e-324}, headers=ADMIN), 422)
    assert_error(api.client.patch(url, json={"max_handshakes": True}, headers=ADMIN), 422)
    assert_error(api.client.patch(url, json={"burst": 5}, headers=ADMIN), 422)
    assert_error(api.client.get("/v1/tenants/ten_nobody/limits", headers=ADMIN), 404)
    audit = api.client.get("/v1/audit-log", params={"action": "tenant.limits_changed"},
                           headers=ADMIN).json()  # fmt: skip
    assert audit["data"] == []


def test_replay_starts_per_minute_and_pace_are_the_tenants_limits(
    make_api: Callable[..., Api],
) -> None:
    first = make_api()
    second = make_api()
    a_id, a_auth = first.tenant("a")
    set_limits(first, a_id, replay_starts_per_min=1, replay_rate_per_s=20)
    replay = {"all": True, "rate_per_s": 20}
    # Starts are counted in fixed one-minute windows (common/db/ratewindow.py): the two
    # starts below must fall in the same one, so not across a minute's turn.
    into_minute = time.time() % 60
    if into_minute > 50:
        time.sleep(60.5 - into_minute)

    started = first.client.post("/v1/replays", json=replay, headers=a_auth)
    again = second.client.post("/v1/replays", json=replay, headers=a_auth)
    dry = second.client.post("/v1/replays", json={**replay, "dry_run": True}, headers=a_auth)
    too_fast = first.client.post("/v1/replays", json={**replay, "rate_per_s": 21}, headers=a_auth)

    assert started.status_code == 202, started.text
    assert "1 replays a minute" in assert_error(again, 429, "rate_limited")
    assert 1 <= int(again.headers["Retry-After"]) <= 60
    assert dry.status_code == 200  # a dry run starts nothing
    assert "at most 20" in assert_error(too_fast, 422, "validation_error")
    admin = first.client.post("/v1/replays", json={"all": True, "rate_per_s": None},
                              headers=ADMIN)  # fmt: skip
    assert admin.status_code == 202, admin.text  # the operator is not limited
    for app in (first, second):
        for thread in getattr(app.app.state, "replay_threads", {}).values():
            thread.join(10)


def test_an_api_key_asking_for_an_unlimited_replay_gets_its_tenants_pace(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    a_id, a_auth = api.tenant("a")
    set_limits(api, a_id, replay_rate_per_s=7)

    started = api.client.post("/v1/replays", json={"all": True, "rate_per_s": None},
                              headers=a_auth)  # fmt: skip

    assert started.status_code == 202, started.text
    assert started.json()["rate_per_s"] == 7
    for thread in getattr(api.app.state, "replay_threads", {}).values():
        thread.join(10)


def test_a_tenant_has_at_most_its_limit_of_subscriptions_whoever_adds_them(
    make_api: Callable[..., Api],
) -> None:
    """Each event of a tenant is written and sent once per subscription it matches, on the
    routers every tenant shares: the count is capped, per tenant, like its API limits."""
    api = make_api(tenant_max_subscriptions=3)
    a_id, a_auth = api.tenant("a")
    _, b_auth = api.tenant("b")
    set_limits(api, a_id, max_subscriptions=2)

    def subscribe(auth: dict[str, str], n: int) -> Any:
        body = {"url": f"http://127.0.0.1:9/hooks/{n}", "event_types": ["order.paid"]}
        return api.client.post("/v1/subscriptions", json=body, headers=auth)

    first = subscribe(a_auth, 1)
    assert first.status_code == 201 and subscribe(a_auth, 2).status_code == 201
    message = assert_error(subscribe(a_auth, 3), 409, "limit_reached")
    assert "has 2 subscriptions and may have 2" in message and "max_subscriptions" in message
    # Lowered below what the tenant has: it keeps them all, and is told how many it has.
    set_limits(api, a_id, max_subscriptions=1)
    assert "has 2 subscriptions and may have 1" in assert_error(subscribe(a_auth, 4), 409)
    set_limits(api, a_id, max_subscriptions=2)
    assert subscribe(a_auth, 1).status_code == 200  # the same one again: no new row
    on_behalf = api.client.post(f"/v1/tenants/{a_id}/subscriptions", headers=ADMIN,
                                json={"url": "http://127.0.0.1:9/hooks/admin",
                                      "event_types": ["order.paid"]})  # fmt: skip
    assert_error(on_behalf, 409, "limit_reached")
    # Another tenant has its own count, and the default.
    assert [subscribe(b_auth, n).status_code for n in range(4)] == [201, 201, 201, 409]
    # A place freed is a place taken again.
    gone = api.client.delete(f"/v1/subscriptions/{first.json()['id']}", headers=a_auth)
    assert gone.status_code == 204
    assert subscribe(a_auth, 3).status_code == 201
    shown = api.client.get(f"/v1/tenants/{a_id}/limits", headers=ADMIN).json()
    assert shown["effective"]["max_subscriptions"] == 2
    assert shown["defaults"]["max_subscriptions"] == 3
    with api.sessionmaker() as session:
        owned = session.scalars(select(Subscription.tenant_id)).all()
    assert sorted(owned).count(a_id) == 2


def test_a_tenants_keys_share_its_requests_per_second_on_every_route_but_ingest(
    make_api: Callable[..., Api],
) -> None:
    """The control plane's lists, look-ups and writes run on the API's threads and database,
    which every tenant shares: one tenant's keys together get `requests_per_s`, counted
    across replicas like the ingest rate; ingest counts events instead."""
    first = make_api(tenant_requests_per_s=1000)
    second = make_api(tenant_requests_per_s=1000)
    a_id, a_auth = first.tenant("a")
    a_reader = first.key(a_id, "deliveries:read")
    _, b_auth = first.tenant("b")
    set_limits(first, a_id, requests_per_s=4)
    for _ in range(3):  # a window can end amid the requests on a slow machine
        at_window_start()
        window = int(time.time())
        answers = [
            first.client.get("/v1/subscriptions", headers=a_auth),
            second.client.get("/v1/deliveries", headers=a_reader),
            second.client.get("/v1/events", headers=a_auth),
            first.client.get("/v1/dead-letters", headers=a_reader),
            second.client.get("/v1/subscriptions", headers=a_auth),
        ]
        others = first.client.get("/v1/subscriptions", headers=b_auth)
        ingest = second.client.post("/v1/events", json=event(), headers=a_auth)
        admin = first.client.get(f"/v1/tenants/{a_id}/limits", headers=ADMIN)
        if int(time.time()) == window:
            break
    assert [a.status_code for a in answers[:4]] == [200] * 4, [a.text for a in answers]
    message = assert_error(answers[4], 429, "rate_limited")
    assert "4 API requests/s" in message and answers[4].headers["Retry-After"] == "1"
    assert others.status_code == 200  # another tenant, its own count
    assert ingest.status_code == 202  # counted as an event, not a request
    assert admin.status_code == 200  # the operator is not limited
    time.sleep(1.0)
    assert first.client.get("/v1/subscriptions", headers=a_auth).status_code == 200


def _keyed_writes(api: Api) -> tuple[list[str], Callable[[], None]]:
    """The statements that touch `idempotency_keys` from now on, and how to stop watching."""
    touched: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "idempotency_keys" in statement:
            touched.append(statement.split()[0])

    sqlalchemy_event.listen(api.engine, "before_cursor_execute", seen)
    return touched, lambda: sqlalchemy_event.remove(api.engine, "before_cursor_execute", seen)


def test_a_tenant_over_its_limits_claims_no_idempotency_key(make_api: Callable[..., Api]) -> None:
    """A keyed POST is claimed (a write) before the route runs and released (a second)
    when the route refuses it. Once this process knows a tenant's window is spent, or that
    the tenant holds all its places, the tenant's keyed POSTs get the route's 429 without
    either write: otherwise a tenant over its limits could still make the database every
    tenant shares write twice for each request it sends, as fast as it sends them."""
    # The door refuses only for a key fresh in the cache; an entry expiring amid the
    # requests (a slow machine) would send one of them on to the route, which is allowed.
    api = make_api(tenant_requests_per_s=2, tenant_ingest_rate_per_s=1, api_key_cache_s=60)
    tenant_id, auth = api.tenant("a")
    url = "http://127.0.0.1:9/hooks"
    subscription = {"url": url, "event_types": ["a"]}
    touched, stop = _keyed_writes(api)
    try:
        for _ in range(3):  # a window can end amid the requests on a slow machine
            at_window_start()
            window = int(time.time())
            spend = [api.client.get("/v1/subscriptions", headers=auth) for _ in range(3)]
            touched.clear()
            keyed = {**auth, "Idempotency-Key": f"over-{window}"}
            refused = api.client.post("/v1/subscriptions", json=subscription, headers=keyed)
            writes = list(touched)
            unparsed = api.client.post(
                "/v1/subscriptions", content=b"{" * 10_000,
                headers={**auth, "Content-Type": "application/json"},
            )  # fmt: skip
            if int(time.time()) == window:
                break
        assert [a.status_code for a in spend] == [200, 200, 429]
        assert "2 API requests/s" in assert_error(refused, 429, "rate_limited")
        assert refused.headers["Retry-After"] == "1"
        assert writes == []
        assert_error(unparsed, 429, "rate_limited")  # refused before its body was parsed

        for _ in range(3):
            at_window_start()
            window = int(time.time())
            first = api.client.post("/v1/events", json=event(), headers=auth)
            second = api.client.post("/v1/events", json=event(), headers=auth)
            touched.clear()
            keyed = {**auth, "Idempotency-Key": f"evt_over_{window}"}
            ingest_refused = api.client.post("/v1/events", json=event(), headers=keyed)
            ingest_writes = list(touched)
            if int(time.time()) == window:
                break
        assert (first.status_code, second.status_code) == (202, 429)
        assert "1 events/s" in assert_error(ingest_refused, 429, "rate_limited")
        assert ingest_writes == []
        # Both answered by the middleware, counted as the route's own 429s are.
        counted = api.metrics.registry.get_sample_value(
            "hookline_api_refusals_total", {"reason": "rate_limited"}
        )
        assert counted is not None and counted >= 4

        cap = api.app.state.services.limits.of_now(tenant_id).max_concurrent_requests
        time.sleep(1.0)  # a fresh requests window: only the places can refuse now
        for _ in range(cap):  # what `cap` requests in progress hold
            assert api.app.state.services.in_flight.enter(tenant_id, cap)
        assert_error(api.client.get("/v1/subscriptions", headers=auth), 429, "concurrency_limited")
        touched.clear()
        busy = api.client.post("/v1/subscriptions", json=subscription, headers=keyed)
        assert_error(busy, 429, "concurrency_limited")
        assert touched == []
        for _ in range(cap):
            api.app.state.services.in_flight.leave(tenant_id)

        at_window_start()  # the limits no longer refuse: the key is claimed as before
        created = api.client.post(
            "/v1/subscriptions", json=subscription, headers={**auth, "Idempotency-Key": "late"}
        )
        assert created.status_code == 201, created.text
        assert "INSERT" in touched
    finally:
        stop()


def test_a_tenant_over_its_ingest_rate_is_refused_before_its_body_is_parsed(
    make_api: Callable[..., Api],
) -> None:
    """Parsing a batch (up to 5 MiB) runs on the event loop every tenant's ingest shares.
    Once this process knows the tenant's window is spent, its next requests get the 429
    before the body is read: a body that is not even JSON is refused for the rate, not
    parsed into a 422, whichever way the request takes (the fast path, or the route for a
    key restricted to some networks)."""
    api = make_api(tenant_ingest_rate_per_s=1, client_address=("127.0.0.1", 40000))
    tenant_id, auth = api.tenant("a")
    fenced = api.client.post(
        f"/v1/tenants/{tenant_id}/api-keys",
        json={"scopes": ["events:write"], "allowed_cidrs": ["127.0.0.0/8"]},
        headers=ADMIN,
    ).json()["api_key"]
    not_json = {"content": b"{" * 100_000, "headers": {**auth, "Content-Type": "application/json"}}
    for _ in range(3):  # a window can end amid the requests on a slow machine
        at_window_start()
        window = int(time.time())
        spent = [api.client.post("/v1/events", json=event(), headers=auth) for _ in range(2)]
        plain = api.client.post("/v1/events/batch", **not_json)
        routed = api.client.post(
            "/v1/events/batch", content=b"{" * 100_000,
            headers={"Authorization": f"Bearer {fenced}", "Content-Type": "application/json"},
        )  # fmt: skip
        if int(time.time()) == window:
            break
    assert [r.status_code for r in spent] == [202, 429]
    assert "1 events/s" in assert_error(plain, 429, "rate_limited")
    assert "1 events/s" in assert_error(routed, 429, "rate_limited")
    time.sleep(1.0)  # a new window: the same body is parsed, and refused for what it is
    assert_error(api.client.post("/v1/events/batch", **not_json), 422)
