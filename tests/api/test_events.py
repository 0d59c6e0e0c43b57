"""`POST /v1/events`: 202 only once the broker confirmed, the event on `hookline.events`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest

from common.errors import ConnectionLostError, PublishError
from common.transport import MemoryTransport, Outgoing, topology
from tests.api.support import Api, assert_error

LIMIT_BYTES = 256 * 1024


class BrokerDown(MemoryTransport):
    """A broker whose connection drops (or that nacks) whenever something is published."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        raise self.error


def ingested(api: Api, result: str) -> float:
    value = api.metrics.registry.get_sample_value(
        "hookline_events_ingested_total", {"result": result}
    )
    return value or 0.0


def test_an_accepted_event_waits_in_the_events_queue_as_a_wire_event(api):
    tenant_id, headers = api.tenant()
    # Timestamps are accepted within a day of the clock.
    stamp = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    local = stamp.astimezone(timezone(timedelta(hours=2)))

    response = api.client.post(
        "/v1/events",
        json={
            "type": "content.updated",
            "data": {"page": "home", "revision": 3},
            "operation": "sync",
            "timestamp": local.isoformat(),
        },
        headers=headers,
    )

    assert response.status_code == 202
    event_id = response.json()["id"]
    assert response.json() == {"id": event_id}
    [(message, event)] = api.published()
    assert message.routing_key == "content.updated"
    assert message.message_id == event_id
    assert event.id == event_id
    assert event.tenant == tenant_id
    assert event.type == "content.updated"
    assert event.operation == "sync"
    assert event.data == {"page": "home", "revision": 3}
    assert event.timestamp == stamp
    assert ingested(api, "accepted") == 1


def test_an_event_id_in_the_body_is_kept(api):
    _, headers = api.tenant()

    response = api.client.post(
        "/v1/events", json={"type": "order.paid", "data": {}, "id": "order-7:paid"}, headers=headers
    )

    assert response.json() == {"id": "order-7:paid"}
    assert [event.id for _, event in api.published()] == ["order-7:paid"]


def test_a_retried_request_with_an_idempotency_key_gets_the_first_answer_again(api):
    _, headers = api.tenant()
    request = {"type": "order.paid", "data": {"order": 7}}
    keyed = {**headers, "Idempotency-Key": "pay-7-attempt"}

    first = api.client.post("/v1/events", json=request, headers=keyed)
    retry = api.client.post("/v1/events", json=request, headers=keyed)

    assert first.status_code == retry.status_code == 202
    assert first.json() == retry.json() == {"id": "pay-7-attempt"}
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert [event.id for _, event in api.published()] == ["pay-7-attempt"]


def test_the_body_id_wins_over_the_idempotency_key(api):
    _, headers = api.tenant()

    response = api.client.post(
        "/v1/events",
        json={"type": "order.paid", "data": {}, "id": "from-body"},
        headers={**headers, "Idempotency-Key": "from-header"},
    )

    assert response.json() == {"id": "from-body"}


def test_an_idempotency_key_that_cannot_be_an_event_id_is_refused(api):
    _, headers = api.tenant()

    response = api.client.post(
        "/v1/events",
        json={"type": "order.paid", "data": {}},
        headers={**headers, "Idempotency-Key": "has spaces/and slashes"},
    )

    assert "Idempotency-Key" in assert_error(response, 422)
    assert api.published() == []


@pytest.mark.parametrize(
    "body",
    [
        {"data": {}},
        {"type": "order.paid"},
        {"type": "order paid", "data": {}},
        {"type": "order.paid", "data": [1, 2]},
        {"type": "order.paid", "data": {}, "operation": "a b"},
        {"type": "order.paid", "data": {}, "id": ""},
        {"type": "order.paid", "data": {}, "timestamp": "2026-05-01T12:00:00"},
        {"type": "order.paid", "data": {}, "timestamp": "yesterday"},
        {"type": "order.paid", "data": {}, "tenant": "someone-else"},
        [],
    ],
)
def test_an_event_that_does_not_fit_the_schema_is_refused_and_not_published(api, body):
    _, headers = api.tenant()

    response = api.client.post("/v1/events", json=body, headers=headers)

    assert_error(response, 422, "validation_error")
    assert api.published() == []


def test_a_body_that_is_not_json_is_refused(api):
    _, headers = api.tenant()

    response = api.client.post(
        "/v1/events",
        content=b'{"type": "order.paid", "data": {',
        headers={**headers, "Content-Type": "application/json"},
    )

    assert "JSON" in assert_error(response, 422, "validation_error")
    assert api.published() == []


def test_a_body_over_the_limit_is_too_large_and_not_published(api):
    _, headers = api.tenant()
    body = {"type": "file.uploaded", "data": {"blob": "x" * LIMIT_BYTES}}

    response = api.client.post("/v1/events", json=body, headers=headers)

    assert "262144 bytes" in assert_error(response, 413, "payload_too_large")
    assert api.published() == []


def test_a_chunked_body_over_the_limit_is_cut_off_without_a_content_length(api):
    _, headers = api.tenant()
    chunk = json.dumps({"type": "file.uploaded", "data": {"blob": "x" * 100_000}}).encode()

    def stream() -> Iterator[bytes]:
        yield from (chunk,) * 3

    response = api.client.post(
        "/v1/events", content=stream(), headers={**headers, "Content-Type": "application/json"}
    )

    assert_error(response, 413, "payload_too_large")
    assert api.published() == []


def test_a_body_just_under_the_limit_is_accepted(api):
    _, headers = api.tenant()
    envelope = json.dumps({"type": "file.uploaded", "data": {"blob": ""}}).encode()
    body = envelope.replace(b'""', b'"' + b"x" * (LIMIT_BYTES - len(envelope)) + b'"')
    assert len(body) == LIMIT_BYTES

    response = api.client.post(
        "/v1/events", content=body, headers={**headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 202
    assert len(api.published()) == 1


@pytest.mark.parametrize(
    "error", [ConnectionLostError("connection reset"), PublishError("nacked by broker")]
)
def test_a_broker_failure_answers_503_and_accepts_nothing(make_api, error):
    api = make_api(transport=BrokerDown(error))
    _, headers = api.tenant()

    response = api.client.post(
        "/v1/events", json={"type": "order.paid", "data": {}}, headers=headers
    )

    message = assert_error(response, 503, "broker_unavailable")
    assert "retry" in message
    assert "connection reset" not in message
    assert response.headers["retry-after"] == "1"
    assert api.transport.queue_depth(topology.EVENTS) == 0
    assert ingested(api, "failed") == 1
    assert ingested(api, "accepted") == 0


def test_publishing_needs_the_events_write_scope(api):
    tenant_id, _ = api.tenant()
    reader = api.key(tenant_id, "subscriptions:read", "deliveries:read")
    event = {"type": "order.paid", "data": {}}

    assert_error(api.client.post("/v1/events", json=event, headers=reader), 403, "forbidden")
    assert_error(api.client.post("/v1/events", json=event), 401, "unauthorized")
    assert api.published() == []


def test_concurrent_requests_are_each_accepted_once(api):
    tenant_id, headers = api.tenant()

    def publish(number: int) -> str:
        response = api.client.post(
            "/v1/events", json={"type": "order.paid", "data": {"n": number}}, headers=headers
        )
        assert response.status_code == 202
        event_id: str = response.json()["id"]
        return event_id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(publish, range(40)))

    published = api.published()
    assert len(set(ids)) == 40
    assert sorted(event.id for _, event in published) == sorted(ids)
    assert sorted(event.data["n"] for _, event in published) == list(range(40))
    assert {event.tenant for _, event in published} == {tenant_id}


def test_accepted_events_are_counted_on_the_metrics_page(api):
    _, headers = api.tenant()
    for _ in range(3):
        api.client.post("/v1/events", json={"type": "order.paid", "data": {}}, headers=headers)

    page = api.client.get("/metrics").text

    assert 'hookline_events_ingested_total{result="accepted"} 3.0' in page


def test_a_plain_request_is_answered_as_the_full_route_answers(api):
    # With an Idempotency-Key the request takes the whole middleware and routing stack;
    # without one `FastIngest` answers it: the client must not be able to tell.
    tenant_id, headers = api.tenant()
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    event = {"type": "order.paid", "data": {"n": 1}, "timestamp": stamp}

    full = api.client.post("/v1/events", json=event, headers={**headers, "Idempotency-Key": "k1"})
    plain = api.client.post("/v1/events", json={**event, "id": "k2"}, headers=headers)

    assert full.status_code == plain.status_code == 202
    assert full.headers["content-type"] == plain.headers["content-type"] == "application/json"
    assert full.headers["content-length"] == plain.headers["content-length"]
    assert (full.json(), plain.json()) == ({"id": "k1"}, {"id": "k2"})
    published = [event for _, event in api.published()]
    assert [e.id for e in published] == ["k1", "k2"]
    assert published[0].model_dump(exclude={"id"}) == published[1].model_dump(exclude={"id"})
    assert published[1].tenant == tenant_id


EVENT_TEXT = '{"type": "order.paid", "data": {"note": "café"}}'


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-8-sig"])
@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "keyed"])
def test_a_body_not_in_utf8_is_refused_on_every_ingest_path(api, path, encoding, keyed):
    """The route parsed a body with `json.loads(bytes)`, which reads UTF-16 and UTF-32 and
    skips a UTF-8 BOM: the fast path handed such a body on, and the route accepted it."""
    _, auth = api.tenant()
    text = EVENT_TEXT if path == "/v1/events" else f'{{"events": [{EVENT_TEXT}]}}'
    headers = {**auth, "content-type": "application/json"}
    if keyed:  # through the whole stack, as the fast path hands it on
        headers["Idempotency-Key"] = f"k-{encoding}"

    refused = api.client.post(path, content=text.encode(encoding), headers=headers)
    accepted = api.client.post(path, content=text.encode(), headers=headers)

    assert "UTF-8" in assert_error(refused, 422, "validation_error")
    assert accepted.status_code == 202, accepted.text
    assert [event.data for _, event in api.published()] == [{"note": "café"}]


def test_a_key_revoked_after_it_was_cached_is_refused_at_once(api):
    tenant_id, headers = api.tenant()
    event = {"type": "order.paid", "data": {}}
    assert api.client.post("/v1/events", json=event, headers=headers).status_code == 202
    (key,) = api.client.get(f"/v1/tenants/{tenant_id}/api-keys", headers=api.admin).json()["data"]
    api.client.delete(f"/v1/tenants/{tenant_id}/api-keys/{key['id']}", headers=api.admin)

    response = api.client.post("/v1/events", json=event, headers=headers)

    assert "revoked" in assert_error(response, 401, "unauthorized")
    assert len(api.published()) == 1


def test_a_key_restricted_to_other_networks_cannot_publish(make_api):
    api = make_api(client_address=("192.0.2.7", 40000))
    tenant_id, _ = api.tenant()
    created = api.client.post(
        f"/v1/tenants/{tenant_id}/api-keys",
        json={"scopes": ["events:write"], "allowed_cidrs": ["10.0.0.0/8"]},
        headers=api.admin,
    )
    auth = {"Authorization": f"Bearer {created.json()['api_key']}"}
    event = {"type": "order.paid", "data": {}}

    for _ in range(2):  # the second with the key cached
        response = api.client.post("/v1/events", json=event, headers=auth)
        assert "address" in assert_error(response, 403, "forbidden")
    assert api.published() == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"type": "order.paid", "data": {}}'),
        ("application/json", b'{"type": "order paid", "data": {}}'),
        ("application/json", b'{"type": "order.paid", "data": {}, "tenant": "other"}'),
        ("application/json", b'{"type": "order.paid", "data": {}'),
    ],
)
def test_a_request_the_fast_path_declines_gets_the_routes_own_answer(api, content_type, body):
    _, headers = api.tenant()
    api.client.post("/v1/events", json={"type": "warm.up", "data": {}}, headers=headers)

    response = api.client.post(
        "/v1/events", content=body, headers={**headers, "Content-Type": content_type}
    )

    assert_error(response, 422, "validation_error")
    assert len(api.published()) == 1


class BrokenTransport(MemoryTransport):
    """A transport with a bug: publishing raises something that is not a TransportError."""

    def publish(self, messages: Sequence[Outgoing], *, timeout_s: float = 30.0) -> None:
        raise RuntimeError("a bug, with a secret: hl_not-for-clients")


def test_an_unexpected_failure_answers_500_in_the_error_shape(make_api, caplog):
    api = make_api(transport=BrokenTransport())
    _, headers = api.tenant()

    response = api.client.post(
        "/v1/events", json={"type": "order.paid", "data": {}}, headers=headers
    )

    assert assert_error(response, 500, "internal") == "internal server error"
    assert "hl_not-for-clients" not in response.text
    assert "ingest request failed" in caplog.text
