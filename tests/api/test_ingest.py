"""Batch ingest, event lookup, and what the router makes of ingested events: a repeated id
delivered once, and payload filters applied."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from common.db.models import Delivery
from common.db.statuses import DeliveryStatus
from common.errors import ConnectionLostError
from common.metrics import Metrics
from common.transport import Message, topology
from common.wire import DeliveryMessage, decode
from router import Router
from tests.api.support import Api, assert_error
from tests.api.test_events import BrokerDown
from tests.queues import DELIVERY_QUEUES

BATCH_LIMIT_BYTES = 5 * 1024 * 1024


def batch(api: Api, auth: dict[str, str], events: list[Any], **headers: str) -> Any:
    return api.client.post("/v1/events/batch", json={"events": events}, headers={**auth, **headers})


def test_a_batch_accepts_the_valid_events_and_says_why_each_other_was_refused(api):
    tenant_id, auth = api.tenant()
    events = [
        {"type": "order.created", "data": {"n": 1}, "id": "ord-1"},
        {"type": "not a type", "data": {}},
        {"type": "order.created", "data": {"n": 3}},
        {"data": {}},
        {"type": "order.created", "data": {}, "tenant": "someone-else"},
    ]

    response = batch(api, auth, events)

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 3)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [
        "accepted", "rejected", "accepted", "rejected", "rejected",
    ]  # fmt: skip
    assert results[0]["id"] == "ord-1"
    assert "type" in results[1]["error"]["message"]
    assert "type" in results[3]["error"]["message"]
    assert "tenant" in results[4]["error"]["message"]
    published = [event for _, event in api.published()]
    assert [e.data for e in published] == [{"n": 1}, {"n": 3}]
    assert {e.tenant for e in published} == {tenant_id}
    counted = {r: api.metrics.events_ingested.labels(result=r)._value.get() for r in
               ("accepted", "rejected")}  # fmt: skip
    assert counted == {"accepted": 2, "rejected": 3}


def test_a_batch_of_a_thousand_is_accepted_and_one_more_is_refused(api):
    _, auth = api.tenant()
    events = [{"type": "bulk.item", "data": {"n": n}} for n in range(1000)]

    accepted = batch(api, auth, events)
    too_many = batch(api, auth, [*events, {"type": "bulk.item", "data": {}}])

    assert accepted.json()["accepted"] == 1000
    assert "1000" in assert_error(too_many, 422, "validation_error")
    assert len(api.published()) == 1000


@pytest.mark.parametrize("body", [{}, {"events": []}, {"events": "x"}, [], {"events": [], "x": 1}])
def test_a_batch_that_is_not_a_list_of_events_is_refused(api, body):
    _, auth = api.tenant()

    response = api.client.post("/v1/events/batch", json=body, headers=auth)

    assert_error(response, 422, "validation_error")
    assert api.published() == []


def test_a_batch_body_over_its_limit_is_too_large(api):
    _, auth = api.tenant()
    padding = "x" * (BATCH_LIMIT_BYTES // 10)
    events = [{"type": "a.b", "data": {"p": padding}} for _ in range(11)]

    response = batch(api, auth, events)

    assert_error(response, 413, "payload_too_large")
    assert api.published() == []


def test_a_broker_failure_accepts_nothing_of_the_batch(make_api):
    api = make_api(transport=BrokerDown(ConnectionLostError("gone")), declare=False)
    _, auth = api.tenant()

    response = batch(api, auth, [{"type": "a.b", "data": {}}])

    assert_error(response, 503, "broker_unavailable")


def test_batch_ingest_needs_the_events_write_scope(api):
    tenant_id, _ = api.tenant()
    reader = api.key(tenant_id, "deliveries:read")

    response = batch(api, reader, [{"type": "a.b", "data": {}}])

    assert "events:write" in assert_error(response, 403, "forbidden")
    assert api.published() == []


@pytest.fixture
def router(api: Api) -> Iterator[Router]:
    settings = api.settings.model_copy(update={"subscription_refresh_s": 0.05})
    running = Router(settings, api.transport, api.sessionmaker, Metrics())
    stop = threading.Event()
    thread = threading.Thread(target=running.run, args=(stop,), daemon=True)
    thread.start()
    yield running
    stop.set()
    thread.join(10)


def deliveries_published(api: Api, wait_s: float = 1.5) -> list[tuple[Message, DeliveryMessage]]:
    """Every delivery message the router published within `wait_s`."""
    consumer = api.transport.consume_many(DELIVERY_QUEUES, prefetch=1000)
    found = []
    deadline = time.monotonic() + wait_s
    try:
        for message in consumer:
            if time.monotonic() > deadline:
                break
            if message is not None:
                found.append((message, decode(DeliveryMessage, message.body)))
                consumer.ack(message)
    finally:
        consumer.close()
    return found


def operator_subscription(api: Api, tenant_id: str, **fields: Any) -> str:
    body = {"url": "http://127.0.0.1:9/h", "event_types": ["order.*"], **fields}
    response = api.client.post(
        f"/v1/tenants/{tenant_id}/subscriptions", json=body, headers=api.admin
    )
    assert response.status_code == 201, response.text
    sub_id: str = response.json()["id"]
    return sub_id


def wait_for_event(api: Api, auth: dict[str, str], event_id: str) -> Any:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        response = api.client.get(f"/v1/events/{event_id}", headers=auth)
        if response.status_code == 200:
            return response.json()
        time.sleep(0.05)
    pytest.fail(f"event {event_id} was never stored")


def test_an_event_id_sent_again_is_not_delivered_again(api, router):
    tenant_id, auth = api.tenant()
    sub_id = operator_subscription(api, tenant_id)
    time.sleep(0.2)  # the router's index picks the subscription up
    event = {"type": "order.paid", "data": {"n": 1}, "id": "pay-1"}
    first = api.client.post("/v1/events", json=event, headers=auth)
    (original,) = deliveries_published(api)
    stored = wait_for_event(api, auth, "pay-1")
    # The dispatcher delivers it (what it records, done here directly).
    with api.sessionmaker.begin() as session:
        row = session.get(Delivery, original[1].delivery_id)
        assert row is not None
        row.status = DeliveryStatus.SUCCEEDED

    again = api.client.post("/v1/events", json=event, headers=auth)
    batched = batch(api, auth, [event, {**event, "data": {"n": 2}}])

    assert first.status_code == again.status_code == batched.status_code == 202
    assert original[1].subscription_id == sub_id
    assert deliveries_published(api) == []
    assert [d["subscription_id"] for d in stored["deliveries"]] == [sub_id]
    assert wait_for_event(api, auth, "pay-1")["data"] == {"n": 1}


def test_an_event_id_whose_time_lies_past_the_calendar_is_routed_and_found(api, router):
    """An id shaped like Hookline's, whose 48 bits of milliseconds name a year past 9999:
    a producer may choose it. Reading its day raised OverflowError: the router took its
    batch for refused and split it down to the event, which was poisoned after its 202
    (every tenant in the batch paying the split), and looking it up answered 500."""
    tenant_id, auth = api.tenant()
    sub_id = operator_subscription(api, tenant_id)
    time.sleep(0.2)  # the router's index picks the subscription up
    event_id = "evt_ffffffffffff7fff8fffffffffffffff"
    event = {"type": "order.paid", "data": {"n": 1}, "id": event_id}

    assert api.client.post("/v1/events", json=event, headers=auth).status_code == 202

    ((_, delivery),) = deliveries_published(api)
    assert (delivery.event_id, delivery.subscription_id) == (event_id, sub_id)
    assert wait_for_event(api, auth, event_id)["data"] == {"n": 1}


def test_a_repeat_before_the_first_attempt_publishes_no_second_copy(api, router):
    # The router publishes a repeated id only when it may owe it (its first publish failed,
    # or the event message came back); here the first copy was confirmed and still waits.
    tenant_id, auth = api.tenant()
    operator_subscription(api, tenant_id)
    time.sleep(0.2)
    event = {"type": "order.paid", "data": {}, "id": "pay-2"}

    first = api.client.post("/v1/events", json=event, headers=auth)
    wait_for_event(api, auth, "pay-2")
    again = api.client.post("/v1/events", json=event, headers=auth)

    assert first.status_code == again.status_code == 202
    published = deliveries_published(api)
    assert len({d.delivery_id for _, d in published}) == 1
    assert [topology.H_RECHECK in m.headers for m, _ in published] == [False]


def test_the_router_applies_the_payload_filter(api, router):
    tenant_id, auth = api.tenant()
    big = operator_subscription(api, tenant_id, filter={"total": {"gte": 100}})
    everything = operator_subscription(api, tenant_id, event_types=["order.created"])
    time.sleep(0.2)

    batch(api, auth, [
        {"type": "order.created", "data": {"total": 250}, "id": "big"},
        {"type": "order.created", "data": {"total": 5}, "id": "small"},
        {"type": "order.created", "data": {}, "id": "none"},
    ])  # fmt: skip

    delivered = {(d.event_id, d.subscription_id) for _, d in deliveries_published(api)}
    assert delivered == {("big", big), ("big", everything), ("small", everything),
                         ("none", everything)}  # fmt: skip


def test_an_unknown_or_foreign_event_is_not_found(api, router):
    _, auth = api.tenant()
    _, other = api.tenant("other")
    api.client.post("/v1/events", json={"type": "a.b", "data": {}, "id": "e1"}, headers=auth)
    wait_for_event(api, auth, "e1")

    assert_error(api.client.get("/v1/events/e1", headers=other), 404, "not_found")
    assert_error(api.client.get("/v1/events/nope", headers=auth), 404, "not_found")


def test_reading_an_event_needs_the_deliveries_read_scope(api):
    tenant_id, _ = api.tenant()
    writer = api.key(tenant_id, "events:write")

    assert "deliveries:read" in assert_error(
        api.client.get("/v1/events/e1", headers=writer), 403, "forbidden"
    )


def test_a_batch_item_is_read_as_the_body_of_a_single_event(api):
    # Optional fields may be null, as in `POST /v1/events`; a timestamp needs its zone.
    tenant_id, auth = api.tenant()
    stamp = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    local = stamp.astimezone(timezone(timedelta(hours=2))).isoformat()
    events = [
        {"type": "order.created", "data": {"n": 1}, "id": None, "timestamp": None},
        {"type": "order.created", "data": {"n": 2}, "operation": "sync", "timestamp": local},
        {"type": "order.created", "data": {"n": 3}, "timestamp": "2026-05-01T12:00:00"},
    ]  # fmt: skip

    body = batch(api, auth, events).json()

    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "rejected"]
    assert "needs its offset" in body["results"][2]["error"]["message"]
    first, second = (event for _, event in api.published())
    assert first.id == body["results"][0]["id"] and first.id.startswith("evt_")
    assert second.operation == "sync"
    assert second.timestamp == stamp and second.timestamp.utcoffset() == timedelta(0)
    assert {first.tenant, second.tenant} == {tenant_id}


def test_a_valid_batch_is_answered_as_the_full_route_answers(api):
    # An Idempotency-Key sends it through the whole stack; without one `FastIngest` answers.
    _, auth = api.tenant()

    def events(suffix: str) -> list[dict[str, Any]]:
        return [
            {"type": "order.created", "data": {"n": n}, "id": f"o-{n}{suffix}"} for n in range(3)
        ]

    full = batch(api, auth, events(""), **{"Idempotency-Key": "b1"})
    plain = batch(api, auth, events("x"))

    assert full.status_code == plain.status_code == 202
    assert full.headers["content-type"] == plain.headers["content-type"] == "application/json"
    assert int(full.headers["content-length"]) + 3 == int(plain.headers["content-length"])
    expected = {"accepted": 3, "rejected": 0}
    assert full.json() == {**expected, "results": [
        {"index": n, "status": "accepted", "id": f"o-{n}", "error": None} for n in range(3)
    ]}  # fmt: skip
    assert plain.json() == {**expected, "results": [
        {"index": n, "status": "accepted", "id": f"o-{n}x", "error": None} for n in range(3)
    ]}  # fmt: skip
    assert [event.id for _, event in api.published()] == [
        "o-0",
        "o-1",
        "o-2",
        "o-0x",
        "o-1x",
        "o-2x",
    ]


def test_hooklines_own_event_types_are_refused_from_producers(api):
    """`hookline.subscription.disabled` is what Hookline says when it disables an endpoint,
    and a tenant's subscribers act on it: a producer key could otherwise forge it."""
    _, auth = api.tenant()
    own = {"type": "hookline.subscription.disabled", "data": {"subscription_id": "sub_x"}}
    single = api.client.post("/v1/events", json=own, headers=auth)
    assert "Hookline's own events" in assert_error(single, 422, "validation_error")
    mixed = batch(api, auth, [own, {"type": "hookline", "data": {}}])  # a plain word is fine
    assert [r["status"] for r in mixed.json()["results"]] == ["rejected", "accepted"]
    assert [event.type for _, event in api.published()] == ["hookline"]
