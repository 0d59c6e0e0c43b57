"""202 means delivered (issue 14, point 6): ingest refuses, with a 422 naming the place,
what the router or PostgreSQL would refuse later, and what it accepts the router stores.

On PostgreSQL. The same values through `POST /v1/events` (fast path and route), the batch
route (item by item) and the producer SDK.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from common import payload
from common.db.models import EventRow
from common.metrics import Metrics
from common.transport import MemoryTransport, topology
from producer import InvalidEvent, Producer
from router import Router
from tests.api.support import Api, assert_error
from tests.security.postgres import database_url  # noqa: F401  (PostgreSQL, not SQLite)

pytestmark = pytest.mark.postgres


def nested(depth: int) -> dict[str, Any]:
    """`depth` objects, the outermost included (as `data`, it is nesting level 1)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


# Raw JSON bodies' `data`, what each must be refused for, and the path it names.
REFUSED = [
    ('{"note": "a\\u0000b"}', "NUL", "data.note"),
    ('{"items": [{"sku": "x"}, {"sku": "y\\u0000"}]}', "NUL", "data.items.1.sku"),
    ('{"ok": {"bad\\u0000key": 1}}', "NUL", "data.ok.bad\\x00key"),
    ('{"s": "\\ud800"}', "surrogate", "data.s"),
    ('{"x": NaN}', "not a JSON number", "data.x"),
    ('{"x": [Infinity]}', "not a JSON number", "data.x.0"),
    ('{"x": -1e400}', "not a JSON number", "data.x"),
    ('{"n": 18446744073709551616}', "integer outside", "data.n"),
    ('{"n": -9223372036854775809}', "integer outside", "data.n"),
    (json.dumps(nested(payload.MAX_DEPTH + 1)), "nested deeper", "data.a.a"),
    (json.dumps(nested(250)), "nested deeper", "data.a.a"),
]
# At the limits: accepted, and stored by the router.
ACCEPTED = [
    {"n": 2**64 - 1, "m": -(2**63), "f": 1.7976931348623157e308, "t": 5e-324},
    {"s": "é \u2028 \U0001f600 \\u0000 literally", "deep": nested(payload.MAX_DEPTH - 1)},
]


def body(data: str) -> bytes:
    return f'{{"type": "order.created", "data": {data}}}'.encode()


@pytest.mark.parametrize(("data", "problem", "path"), REFUSED)
def test_ingest_refuses_what_cannot_be_stored_naming_where(
    make_api: Callable[..., Api],
    data: str,
    problem: str,
    path: str,
) -> None:
    api = make_api()
    _, auth = api.tenant()
    headers = {**auth, "content-type": "application/json"}

    message = assert_error(api.client.post("/v1/events", content=body(data), headers=headers), 422)
    assert problem in message and path in message, message
    # The route (not the fast path) words it the same.
    keyed = {**headers, "Idempotency-Key": "k-1"}
    message = assert_error(api.client.post("/v1/events", content=body(data), headers=keyed), 422)
    assert problem in message and path in message, message

    batch = f'{{"events": [{{"type": "order.ok", "data": {{}}}}, {body(data).decode()}]}}'
    response = api.client.post("/v1/events/batch", content=batch, headers=headers)
    assert response.status_code == 202, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted", "rejected"]
    error = results[1]["error"]["message"]
    assert problem in error and path in error, error

    assert [e.type for _, e in api.published()] == ["order.ok"]


def test_the_producer_sdk_refuses_the_same(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    with Producer(api.settings, transport=api.transport) as producer:
        for data, problem, path in REFUSED:
            with pytest.raises(InvalidEvent) as caught:
                producer.publish("order.created", json.loads(data), tenant="ten_1")
            assert problem in str(caught.value) and path in str(caught.value), str(caught.value)
            with pytest.raises(InvalidEvent):
                producer.publish_batch([{"type": "order.created", "tenant": "t", "data": {"x": 1}},
                                        {"type": "order.created", "tenant": "t",
                                         "data": json.loads(data)}])  # fmt: skip
    assert api.published() == []


def test_a_timestamp_out_of_range_in_utc_is_refused(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    _, auth = api.tenant()
    for stamp in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        event = {"type": "order.created", "data": {}, "timestamp": stamp}
        message = assert_error(api.client.post("/v1/events", json=event, headers=auth), 422)
        assert "timestamp" in message and "range" in message, message
        response = api.client.post("/v1/events/batch", json={"events": [event]}, headers=auth)
        assert response.json()["results"][0]["status"] == "rejected", response.text


@pytest.fixture
def router_on(make_api: Callable[..., Api]) -> Iterator[Callable[[Api], None]]:
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(api: Api) -> None:
        router = Router(api.settings, api.transport, api.sessionmaker, Metrics())
        stop = threading.Event()
        thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
        thread.start()
        stops.append((stop, thread))

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(10)


def test_what_ingest_accepts_at_the_limits_the_router_stores(
    make_api: Callable[..., Api],
    router_on: Callable[[Api], None],
) -> None:
    api = make_api(transport=MemoryTransport())
    _, auth = api.tenant()
    for data in ACCEPTED:
        response = api.client.post("/v1/events", json={"type": "t.x", "data": data}, headers=auth)
        assert response.status_code == 202, response.text
    response = api.client.post(
        "/v1/events/batch",
        json={"events": [{"type": "t.x", "data": data} for data in ACCEPTED]},
        headers=auth,
    )
    assert response.json()["accepted"] == len(ACCEPTED), response.text
    router_on(api)

    def stored() -> int:
        with api.sessionmaker() as session:
            return session.scalar(select(func.count()).select_from(EventRow)) or 0

    deadline = time.monotonic() + 20
    while stored() < 2 * len(ACCEPTED) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored() == 2 * len(ACCEPTED)
    assert api.transport.queue_depth(topology.POISON) == 0
    with api.sessionmaker() as session:
        rows = session.scalars(select(EventRow.data)).all()
    assert all(row in ACCEPTED for row in rows)
