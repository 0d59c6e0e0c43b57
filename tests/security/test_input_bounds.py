"""Bounds on what a request may carry (issue 14, point 10), on PostgreSQL: subscription
header values a delivery can send, the size of a request's head on the real server, a
tenant's replay pace, and how far an event's timestamp may be from the clock."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from common.settings import Settings
from producer import InvalidEvent, Producer
from tests.api.support import ADMIN_TOKEN, Api, assert_error
from tests.security.postgres import database_url  # noqa: F401  (PostgreSQL, not SQLite)
from tests.served import served_api

pytestmark = pytest.mark.postgres


def subscribe(api: Api, tenant_id: str, headers: dict[str, str]) -> Any:
    body = {"url": "http://127.0.0.1:1/hooks", "event_types": ["*"], "headers": headers}
    return api.client.post(f"/v1/tenants/{tenant_id}/subscriptions", json=body, headers=api.admin)


@pytest.mark.parametrize(
    "value", ["token \u20ac", "\u4e2d\u6587", "a\U0001f600", "a\x7fb", "a\x01b", "line\n"]
)
def test_a_subscription_header_value_a_delivery_cannot_send_is_refused(
    make_api: Callable[..., Api],
    value: str,
) -> None:
    api = make_api(allow_http=True)
    tenant_id, auth = api.tenant()

    message = assert_error(subscribe(api, tenant_id, {"X-Token": value}), 422)
    assert "X-Token" in message and "latin-1" in message, message

    created = subscribe(api, tenant_id, {"X-Token": "caf\u00e9 ok"})  # latin-1: sendable
    assert created.status_code == 201, created.text
    url = f"/v1/subscriptions/{created.json()['id']}"
    update = api.client.patch(url, json={"headers": {"X-Token": value}}, headers=auth)
    assert_error(update, 422)


@pytest.mark.parametrize("name", ["X-Token\n", "Host\n", "X Token", "X-Caf\u00e9", ""])
def test_a_subscription_header_name_that_is_not_an_http_token_is_refused(
    make_api: Callable[..., Api],
    name: str,
) -> None:
    """A name with a final newline is refused too: it would fail every delivery, and
    `Host\\n` would get past the reserved names."""
    api = make_api(allow_http=True)
    tenant_id, auth = api.tenant()

    message = assert_error(subscribe(api, tenant_id, {name: "v"}), 422)
    assert "HTTP token" in message, message

    created = subscribe(api, tenant_id, {"X-Token": "v"})
    assert created.status_code == 201, created.text
    url = f"/v1/subscriptions/{created.json()['id']}"
    assert_error(api.client.patch(url, json={"headers": {name: "v"}}, headers=auth), 422)


def test_a_header_name_and_the_header_block_are_bounded(make_api: Callable[..., Api]) -> None:
    """A 200,000-character name would go out with every webhook, past what any server takes
    in a header line; so would fifty values of 4,096 characters in one request head."""
    api = make_api(allow_http=True)
    tenant_id, auth = api.tenant()

    message = assert_error(subscribe(api, tenant_id, {"X" * 200_000: "v"}), 422)
    assert "at most 256" in message and len(message) < 500, message[:500]
    assert_error(subscribe(api, tenant_id, {"X" * 257: "v"}), 422)
    block = {f"X-Part-{i}": "v" * 4000 for i in range(3)}
    assert "8,192" in assert_error(subscribe(api, tenant_id, block), 422)

    created = subscribe(api, tenant_id, {"X" * 256: "v", "X-Two": "v" * 4000})
    assert created.status_code == 201, created.text
    url = f"/v1/subscriptions/{created.json()['id']}"
    assert_error(api.client.patch(url, json={"headers": {"X" * 257: "v"}}, headers=auth), 422)
    assert_error(api.client.patch(url, json={"headers": block}, headers=auth), 422)


@pytest.fixture
def served(database_url: str) -> Iterator[tuple[str, int]]:  # noqa: F811
    settings = Settings(
        database_url=database_url, broker_url="memory://", admin_token=ADMIN_TOKEN,
        max_header_bytes=16 * 1024,
    )  # fmt: skip
    with served_api(settings) as address:
        yield address


def raw_request(address: tuple[str, int], head: bytes, timeout_s: float = 10) -> bytes:
    """Send `head` on a fresh connection (stopping early if the server closes) and return
    everything the server answered until it closed the connection."""
    with socket.create_connection(address, timeout=timeout_s) as sock:
        try:
            for start in range(0, len(head), 65536):
                sock.sendall(head[start : start + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def test_a_huge_request_head_is_refused_fast_and_the_server_carries_on(
    served: tuple[str, int],
) -> None:
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n"
    started = time.monotonic()
    answer = raw_request(served, huge)
    assert time.monotonic() - started < 5
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"headers_too_large" in answer

    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n"
    assert raw_request(served, many).startswith(b"HTTP/1.1 431")
    long_url = b"GET /healthz?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert raw_request(served, long_url).startswith(b"HTTP/1.1 431")

    # A head within the limit, then a body far larger than it: answered as usual.
    fine = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Ok: "
        + b"a" * 8000
        + b"\r\nConnection: close\r\n\r\n"
    )
    assert raw_request(served, fine).startswith(b"HTTP/1.1 200")
    host, port = served
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    big_body = {"name": "x" * 150}
    created = requests.post(
        f"http://{host}:{port}/v1/tenants", json=big_body, headers=admin, timeout=10
    )
    assert created.status_code == 201, created.text
    auth = {"Authorization": f"Bearer {created.json()['api_key']}"}
    batch = {"events": [{"type": "t.x", "data": {"pad": "p" * 1000}} for _ in range(100)]}
    response = requests.post(
        f"http://{host}:{port}/v1/events/batch", json=batch, headers=auth, timeout=10
    )
    assert response.status_code == 202, response.text


def test_a_tenants_replay_pace_is_capped(make_api: Callable[..., Api]) -> None:
    api = make_api(replay_max_rate_per_s=200)
    _, auth = api.tenant()
    base = {"subscription_id": "sub_none"}

    for rate in (1e300, 201):
        response = api.client.post("/v1/replays", json={**base, "rate_per_s": rate}, headers=auth)
        message = assert_error(response, 422)
        assert "rate_per_s" in message and "200" in message, message
    unlimited = api.client.post("/v1/replays", json={**base, "rate_per_s": None}, headers=auth)
    assert unlimited.status_code == 202, unlimited.text
    assert unlimited.json()["rate_per_s"] == 200  # an API key's "unlimited" is its cap
    recover = api.client.post(
        "/v1/subscriptions/sub_none/recover",
        json={"since": datetime.now(UTC).isoformat(), "rate_per_s": 1e300},
        headers=auth,
    )
    assert recover.status_code in (404, 422), recover.text  # not found, or refused first

    ok = api.client.post("/v1/replays", json={**base, "rate_per_s": 200}, headers=auth)
    assert ok.status_code == 202, ok.text
    # The operator's token is not capped.
    admin = api.client.post("/v1/replays", json={**base, "rate_per_s": None}, headers=api.admin)
    assert admin.status_code == 202, admin.text
    assert admin.json()["rate_per_s"] is None
    for job in (
        unlimited.json()["id"],
        ok.json()["id"],
        admin.json()["id"],
    ):  # finished before the tables are emptied
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = api.client.get(f"/v1/replays/{job}", headers=api.admin).json()["state"]
            if state != "running":
                break
            time.sleep(0.05)


@pytest.mark.parametrize("rate", [1e-300, 5e-324, 0.0099])
def test_a_replay_slower_than_one_copy_a_100_s_is_refused(
    make_api: Callable[..., Api], rate: float
) -> None:
    """Accepted, a rate such as 1e-300 made the runner's wait between batches overflow:
    the job failed with an OverflowError. The floor is the tenant limits' (0.01)."""
    api = make_api()
    _, auth = api.tenant()
    since = datetime.now(UTC).isoformat()
    for headers in (auth, api.admin):
        for path, body in (
            ("/v1/replays", {"all": True}),
            ("/v1/subscriptions/sub_none/recover", {"since": since}),
        ):
            response = api.client.post(path, json={**body, "rate_per_s": rate}, headers=headers)
            assert "rate_per_s" in assert_error(response, 422, "validation_error")


def test_an_event_timestamp_far_from_the_clock_is_refused(
    make_api: Callable[..., Api],
) -> None:
    api = make_api()
    _, auth = api.tenant()
    now = datetime.now(UTC)
    for stamp in (
        now - timedelta(days=2),
        datetime(2000, 1, 1, tzinfo=UTC),
        now + timedelta(hours=1),
    ):
        event = {"type": "order.created", "data": {}, "timestamp": stamp.isoformat()}
        message = assert_error(api.client.post("/v1/events", json=event, headers=auth), 422)
        assert "timestamp" in message, message
        with (
            Producer(api.settings, transport=api.transport) as producer,
            pytest.raises(InvalidEvent, match="timestamp"),
        ):
            producer.publish("order.created", {}, tenant="ten_1", timestamp=stamp)
    recent = {
        "type": "order.created",
        "data": {},
        "timestamp": (now - timedelta(hours=23)).isoformat(),
    }
    assert api.client.post("/v1/events", json=recent, headers=auth).status_code == 202
